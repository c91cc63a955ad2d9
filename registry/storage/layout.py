"""Where things live under the data directory, and the safe folder name of a model.

Layout::

    <data_dir>/files/<file id>.jsonl                 uploaded files (the user's filename is only a label)
    <data_dir>/adapters/<job id>/                    a job's working folder (training's ``output_dir``:
                                                     its checkpoints, in diablo_core's checkpoint format)
    <data_dir>/adapters/<safe fine-tuned name>/      a published adapter, which the registry points at
    <data_dir>/models/<name>/                        local and converted base models
    <data_dir>/token_counts/<key>.json               a file's example lengths under a model's tokenizer
                                                     (``api.services.example_lengths``' cache)

The registry records storage paths; a relative one lies under ``adapters_dir``.
"""

from __future__ import annotations

import re
from pathlib import Path

from registry.settings import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_dir_name(model_name: str) -> str:
    """A folder name for a model name with ``/`` and ``:`` (other characters become ``-``)."""
    return _UNSAFE.sub("-", model_name).strip("-.") or "adapter"


def models_dir(settings: Settings) -> Path:
    """The folder of local and converted base-model checkpoints."""
    return settings.data_dir / "models"


def token_counts_dir(settings: Settings) -> Path:
    """The folder of cached example lengths (one small JSON per file content and tokenizer)."""
    return settings.data_dir / "token_counts"


def uploaded_file_path(settings: Settings, file_id: str) -> Path:
    """Where the uploaded file ``file_id`` is stored."""
    return settings.files_dir / f"{file_id}.jsonl"


def job_dir(adapters_dir: Path, job_id: str) -> Path:
    """The working folder of a job (training's ``output_dir``)."""
    return adapters_dir / job_id


def published_adapter_dir(adapters_dir: Path, model_name: str) -> Path:
    """Where the fine-tuned model ``model_name``'s adapter is published."""
    return adapters_dir / safe_dir_name(model_name)


def stored_path(storage_path: str, base: Path) -> Path:
    """A storage path the registry recorded; a relative one lies under ``base``."""
    path = Path(storage_path)
    return path if path.is_absolute() else base / path
