"""Where a job's files live under ``adapters_dir``, and how a finished adapter is staged and placed.

Layout::

    <adapters_dir>/<job id>/checkpoints/step-<n>/   resumable checkpoints (each holds trainer_state.json)
    <adapters_dir>/<job id>/adapter/                the final adapter as training writes it
    <adapters_dir>/<safe fine-tuned model name>/    the published adapter that the registry points at

Publishing is two steps: ``stage_adapter`` copies the adapter to a staging folder whose name is unique to
this host, process, attempt and call, flushes it and hashes it; ``place_adapter`` renames it into place,
which the worker does only inside the transaction that checks its lease and registers the adapter.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from diablo_core.training.checkpoints import replace_dir, staging_dir
from registry.durable import fsync_dir, fsync_tree

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HASH_CHUNK = 1 << 20
TRAINER_STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class StagedAdapter:
    """An adapter copied next to its final place, flushed, with the digest and size of its weights file."""

    path: Path
    staging: Path
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


def is_resumable(path: Path) -> bool:
    """True when ``path`` is a full training checkpoint, not an adapter-only snapshot."""
    return (path / TRAINER_STATE_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stage_adapter(source: Path, adapters_dir: Path, model_name: str, attempt: int) -> StagedAdapter:
    """Copy the adapter in ``source`` beside ``<adapters_dir>/<safe model_name>/``, flushed and hashed.

    Nothing visible changes: the staging name is unique per host, process, attempt and call.
    """
    final = adapters_dir / safe_dir_name(model_name)
    staging = staging_dir(adapters_dir, final.name, f"a{attempt}")
    shutil.copytree(source, staging)
    fsync_tree(staging)
    weights = staging / WEIGHTS_FILE
    return StagedAdapter(final, staging, file_sha256(weights), weights.stat().st_size)


def place_adapter(adapter: StagedAdapter) -> Path:
    """Rename a staged adapter into place (replacing one an earlier attempt of the job left) and flush."""
    replace_dir(adapter.staging, adapter.path)
    fsync_dir(adapter.path.parent)
    return adapter.path


def discard_staged(adapter: StagedAdapter) -> None:
    """Remove a staged adapter that was not placed (no-op once placed)."""
    shutil.rmtree(adapter.staging, ignore_errors=True)
