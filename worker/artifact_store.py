"""Where a job's files live under ``adapters_dir``, and how a finished adapter is published atomically.

Layout::

    <adapters_dir>/<job id>/checkpoints/step-<n>/   checkpoints (resumable ones hold trainer_state.json)
    <adapters_dir>/<job id>/adapter/                the final adapter as training writes it
    <adapters_dir>/<safe fine-tuned model name>/    the published adapter that the registry points at
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from diablo_core.adapter_io import WEIGHTS_FILE
from diablo_core.checkpoints import checkpoint_dirs

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HASH_CHUNK = 1 << 20
TRAINER_STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class PublishedAdapter:
    """A published adapter directory and the digest and size of its weights file."""

    path: Path
    sha256: str
    size_bytes: int


def job_dir(adapters_dir: Path, job_id: str) -> Path:
    """The working directory of a job (training's ``output_dir``)."""
    return adapters_dir / job_id


def checkpoints_dir(adapters_dir: Path, job_id: str) -> Path:
    """Where a job's ``step-<n>`` checkpoints are written."""
    return job_dir(adapters_dir, job_id) / "checkpoints"


def safe_dir_name(model_name: str) -> str:
    """A directory name for a model name with ``/`` and ``:`` (other characters become ``-``)."""
    return _UNSAFE.sub("-", model_name).strip("-.") or "adapter"


def latest_resumable_checkpoint(adapters_dir: Path, job_id: str) -> Path | None:
    """The newest checkpoint of the job that training can resume from (it holds the trainer state)."""
    resumable = [
        path for path in checkpoint_dirs(checkpoints_dir(adapters_dir, job_id)) if is_resumable(path)
    ]
    return resumable[-1] if resumable else None


def is_resumable(path: Path) -> bool:
    """True when ``path`` is a full training checkpoint, not an adapter-only snapshot."""
    return (path / TRAINER_STATE_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def step_of(path: Path) -> int:
    """The step number of a ``step-<n>`` directory."""
    return int(path.name.rsplit("-", 1)[-1])


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def publish_adapter(source: Path, adapters_dir: Path, model_name: str) -> PublishedAdapter:
    """Move the adapter in ``source`` to ``<adapters_dir>/<safe model_name>/`` atomically.

    The files are moved into a temporary sibling first, then renamed into place, so readers see either
    no adapter or a complete one. An adapter already there (left by an earlier attempt of the same job)
    is replaced.
    """
    final = adapters_dir / safe_dir_name(model_name)
    staging = adapters_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    if final.exists():
        retired = adapters_dir / f".old-{final.name}-{os.getpid()}"
        os.replace(final, retired)
        shutil.rmtree(retired, ignore_errors=True)
    os.replace(staging, final)
    shutil.rmtree(source, ignore_errors=True)
    weights = final / WEIGHTS_FILE
    return PublishedAdapter(path=final, sha256=file_sha256(weights), size_bytes=weights.stat().st_size)


def write_snapshot(root: Path, step: int, save: Callable[[Path], object]) -> Path:
    """Write an adapter-only ``root/step-<step>/`` through ``save(directory)``, atomically."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    staging = root / f".tmp-snapshot-{step}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    save(staging)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    return final
