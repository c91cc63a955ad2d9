"""Peak memory of one variant's training steps, measured alone in the calling (fresh) process.

On CPU the peak is the process's resident-set high-water mark. Loading the model leaves a higher mark
(dequantising the GGUF file) and may leave weights memory-mapped but not yet read, so after building the
variant every parameter is read once (paging in the whole model), the freed heap is returned to the system
(``malloc_trim``) and the mark is reset (``/proc/self/clear_refs``): the reported peak covers only the
training steps, that is the resident model plus what the steps add (activations kept for backward,
gradients, optimizer state). On CUDA the same holds for ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import re
from pathlib import Path

import torch
from torch import nn

from benchmarks.train_variants import load_plain, make_variant, synthetic_batch, train_step

STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE).group(1))


def _reset_cpu_peak(model: nn.Module) -> float:
    """Pages the model in, frees what loading left behind, resets the RSS high-water mark; returns the RSS."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()  # reads every page of a memory-mapped weight
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    return _status_kib("VmRSS") / 1024


def _reset_peak(model: nn.Module, device: str) -> float:
    """Resets the device's peak counter and returns the memory in use now, in MiB."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    return _reset_cpu_peak(model)


def _peak(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_kib("VmHWM") / 1024


def measure_memory(args: argparse.Namespace, name: str, precision: str) -> dict[str, float]:
    """Builds variant ``name`` alone, takes ``args.memory_steps`` steps and returns its memory in MiB.

    ``precision`` (``"fp32"`` or ``"bf16"``) is the storage of the frozen weights (trainable ones stay fp32).

    Returns:
        ``{"setup_mb", "peak_mb", "training_mb"}``: in use before the first step (model and adapter), the
        peak during the steps, and their difference (what training adds).
    """
    base = load_plain(args.model, args.device, torch.float32)
    variant = make_variant(base, name, copy_base=False, precision=precision)
    del base
    batch = synthetic_batch(variant.model.config.vocab_size, args.batch_size, args.seq_len, args.response_len)
    setup = _reset_peak(variant.model, args.device)
    for _ in range(args.memory_steps):
        train_step(variant, batch, args.device)
    peak = _peak(args.device)
    return {"setup_mb": setup, "peak_mb": peak, "training_mb": peak - setup}
