"""The forms a fine-tuned model can be exported in; torch-free, so that an API can validate requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from diablo_core.errors import ExportError

ExportFormat = Literal["adapter", "merged", "gguf"]
Quantization = Literal["f16", "q8_0"]
FORMATS: tuple[str, ...] = ("adapter", "merged", "gguf")
QUANTIZATION_NAMES: tuple[str, ...] = ("f16", "q8_0")
MEDIA_TYPES = {
    "adapter": "application/x-tar",
    "merged": "application/x-tar",
    "gguf": "application/octet-stream",
}


@dataclass(frozen=True)
class ExportRequest:
    """Which form of a model to export: ``adapter``, ``merged`` or ``gguf`` (``f16`` or ``q8_0``).

    Raises:
        ExportError: ``export_invalid`` for an unknown format or quantization, or a quantization asked of a
            format other than ``gguf``.
    """

    format: str
    quantization: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"format must be one of {list(FORMATS)}, got {self.format!r}", "export_invalid")
        if self.quantization is not None and self.format != "gguf":
            message = f"quantization applies to format 'gguf' only, not {self.format!r}"
            raise ExportError(message, "export_invalid")
        if self.quantization not in (None, *QUANTIZATION_NAMES):
            message = f"quantization must be one of {list(QUANTIZATION_NAMES)}, got {self.quantization!r}"
            raise ExportError(message, "export_invalid")

    @property
    def gguf_type(self) -> str:
        """The GGUF tensor type: the quantization asked for, float16 by default."""
        return self.quantization or "f16"

    @property
    def file_name(self) -> str:
        """``adapter.tar``, ``merged.tar`` or ``model-<quantization>.gguf``."""
        return f"model-{self.gguf_type}.gguf" if self.format == "gguf" else f"{self.format}.tar"

    @property
    def suffix(self) -> str:
        """The extension of a downloaded file: ``.tar`` or ``-<quantization>.gguf``."""
        return f"-{self.gguf_type}.gguf" if self.format == "gguf" else f"-{self.format}.tar"
