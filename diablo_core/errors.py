"""Errors raised by diablo_core, each with a stable machine-readable ``code``."""

from __future__ import annotations


class DiaBloError(Exception):
    """Base class of every diablo_core error.

    Attributes:
        code: Stable machine-readable code (e.g. ``adapter_base_mismatch``) that callers map to
            API error codes and tests assert on.
        message: Human-readable explanation, also the ``str()`` of the exception.
    """

    default_code = "diablo_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class AdapterError(DiaBloError):
    """An adapter cannot be saved, found, read or applied.

    Codes: ``adapter_base_mismatch``, ``adapter_quantization_mismatch``, ``adapter_missing_tensor``,
    ``adapter_extra_tensor``, ``adapter_shape_mismatch``, ``adapter_config_invalid``, ``adapter_not_found``.
    """

    default_code = "adapter_config_invalid"


class DatasetError(DiaBloError):
    """A training dataset is missing, unreadable or invalid."""

    default_code = "dataset_invalid"


class ModelLoadError(DiaBloError):
    """A base model cannot be found or loaded (code ``model_not_found`` when it does not exist)."""

    default_code = "model_not_found"


class ConfigError(DiaBloError, ValueError):
    """A configuration does not fit the model it is applied to (e.g. no target module matched).

    Also a ``ValueError``, so callers validating user input can catch either.
    """

    default_code = "config_invalid"


class ExportError(DiaBloError):
    """A model cannot be exported in the requested form.

    Codes: ``export_unsupported`` (an architecture or tokenizer the exporter does not handle),
    ``export_invalid`` (an unknown format or quantization).
    """

    default_code = "export_unsupported"
