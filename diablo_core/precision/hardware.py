"""What the hardware computes natively, the one rule that turns "auto" into a precision, torch threads.

``"auto"`` is bf16 on a CUDA device with bf16 support and on a CPU with AVX512-BF16 or AMX (detected at run
time: torch's CPU probes, then the ``/proc/cpuinfo`` flags), fp32 elsewhere.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from diablo_core.precision.names import INFERENCE_DTYPES, check_precision, check_training_precision

# /proc/cpuinfo flags of the CPUs whose matrix units compute bf16 products natively.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX-BF16)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(getattr(torch.cpu, probe, lambda: False)() for probe in probes):
        return True
    return bool(_cpuinfo_flags() & NATIVE_BF16_FLAGS)


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        text = path.read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return flags


def device_has_native_bf16(device: str) -> bool:
    """Whether ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``...) computes bf16 natively."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if kind == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_precision(requested: str, device: str) -> str:
    """The precision a training run uses: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (never ``"auto"``).

    Raises:
        ValueError: An unknown name, or fp16 on a device other than CUDA.
    """
    check_training_precision(requested, device)
    if requested == "auto":
        return "bf16" if device_has_native_bf16(device) else "fp32"
    return requested


def resolve_inference_dtype(requested: str, device: str) -> str:
    """The dtype the inference engine holds its weights in: ``"fp32"`` or ``"bf16"``."""
    check_precision(requested, "inference dtype", INFERENCE_DTYPES)
    if requested == "auto":
        return "bf16" if device_has_native_bf16(device) else "fp32"
    return requested


def torch_dtype(precision: str) -> torch.dtype:
    """The storage dtype of the frozen weights for a resolved precision."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of {list(dtypes)} once resolved, got {precision!r}")
    return dtypes[precision]


def apply_torch_threads(threads: int) -> int:
    """Sets torch's intra-op thread count when ``threads`` is positive (0 keeps torch's default).

    Returns:
        The thread count torch uses now.
    """
    if threads < 0:
        raise ValueError(f"torch threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
