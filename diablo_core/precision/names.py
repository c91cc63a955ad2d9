"""The precision names a user may ask for, and their checks (torch-free: the job spec and settings use them).

Training takes ``"auto" | "fp32" | "bf16" | "fp16"``; serving takes ``"auto" | "fp32" | "bf16"``. ``"auto"``
means bf16 wherever the hardware computes it natively and fp32 elsewhere (resolved by
``diablo_core.precision.hardware``). fp16 is CUDA only: it needs a gradient scaler and the CPU has no fast
fp16 matrix product.
"""

from __future__ import annotations

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
INFERENCE_DTYPES = ("auto", "fp32", "bf16")


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
