"""Numeric precision: the names a user may ask for and the one rule that turns "auto" into a choice.

Training takes ``"auto" | "fp32" | "bf16" | "fp16"``; serving takes ``"auto" | "fp32" | "bf16"``. ``"auto"``
means bf16 wherever the hardware computes it natively (a CUDA device with bf16 support, or a CPU with
AVX512-BF16 or AMX, detected at run time) and fp32 elsewhere. fp16 is CUDA only: it needs a gradient scaler
and the CPU has no fast fp16 matrix product.

The names are importable without torch (the torch-free job specification validates against them); torch is
imported only by the functions that look at the hardware.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INFERENCE_DTYPES = ("auto", "fp32", "bf16")
# /proc/cpuinfo flags of the CPUs whose matrix units compute bf16 products natively.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def check_precision(value: str, field: str = "precision", allowed: tuple[str, ...] = PRECISIONS) -> str:
    """Returns ``value`` when it is one of ``allowed``; otherwise a ValueError naming ``field``."""
    if value not in allowed:
        raise ValueError(f"{field} must be one of {list(allowed)}, got {value!r}")
    return value


def check_training_precision(precision: str, device: str) -> str:
    """``check_precision`` plus the device rule: fp16 only on CUDA (a ValueError that says what to use)."""
    check_precision(precision)
    if precision == "fp16" and not device.startswith("cuda"):
        raise ValueError(
            f"precision 'fp16' needs a CUDA device (fp16 autocast with a gradient scaler), got device "
            f"{device!r}; use 'bf16' or 'fp32'"
        )
    return precision


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX-BF16)."""
    import torch

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
    import torch

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
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of {list(dtypes)} once resolved, got {precision!r}")
    return dtypes[precision]
