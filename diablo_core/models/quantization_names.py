"""The quantizations a base model may be loaded with, and their check (torch-free: the job spec and the
service settings name them; ``diablo_core.models.quantization`` implements them)."""

from __future__ import annotations

from typing import Literal

QUANTIZATIONS: tuple[str, ...] = ("nf4", "int8")
# The same names as a type, for settings and schemas (a test keeps the two equal).
Quantization = Literal["nf4", "int8"]


def check_quantization(value: str | None) -> str | None:
    """``value`` if it is None or a supported quantization; else a ValueError naming the choices."""
    if value is not None and value not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {list(QUANTIZATIONS)} or null, got {value!r}")
    return value
