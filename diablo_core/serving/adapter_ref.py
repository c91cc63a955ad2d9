"""Which adapter a request names: its directory and the sha256 its weights must have (torch-free).

The API builds these from the registry's rows without loading the serving stack; the engine's cache
(``diablo_core.serving.adapter_cache``) reads and checks the files they point to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def normalize_sha256(value: str) -> str:
    """Lower-case hex digest of ``value`` (``"sha256:<hex>"`` or ``"<hex>"``); ValueError if malformed."""
    digest = value.lower().removeprefix("sha256:")
    if len(digest) != 64 or any(char not in "0123456789abcdef" for char in digest):
        raise ValueError(f"sha256 must be 64 hex digits (optionally prefixed 'sha256:'), got {value!r}")
    return digest


@dataclass(frozen=True)
class AdapterRef:
    """Where an adapter lives and the sha256 its weights file must have.

    Attributes:
        sha256: Expected digest of ``adapter_model.safetensors`` (``"sha256:<hex>"`` or ``"<hex>"``).
        path: Directory holding ``adapter_config.json`` and ``adapter_model.safetensors``.
    """

    sha256: str
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", normalize_sha256(self.sha256))
        object.__setattr__(self, "path", Path(self.path))
