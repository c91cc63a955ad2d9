"""Where a job's files live under ``adapters_dir``, and how a finished adapter is staged and placed.

The layout is ``registry.storage``'s (a job's folder, the published adapter's safe name); the checkpoints
inside a job's folder are in ``diablo_core.training.checkpoints``'s format, which only that module knows.

Publishing is two steps: ``stage_adapter`` copies the adapter to a staging folder whose name is unique to
this host, process, attempt and call, flushes it and hashes it; ``place_adapter`` renames it into place,
which the worker does only inside the transaction that checks its lease and registers the adapter.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from diablo_core.training.checkpoints import checkpoints_root, replace_dir, staging_dir
from registry.storage import file_sha256, fsync_dir, fsync_tree, job_dir, published_adapter_dir


@dataclass(frozen=True)
class StagedAdapter:
    """An adapter copied next to its final place, flushed, with the digest and size of its weights file."""

    path: Path
    staging: Path
    sha256: str
    size_bytes: int


def checkpoints_dir(adapters_dir: Path, job_id: str) -> Path:
    """Where a job's ``step-<n>`` checkpoints are written."""
    return checkpoints_root(job_dir(adapters_dir, job_id))


def stage_adapter(source: Path, adapters_dir: Path, model_name: str, attempt: int) -> StagedAdapter:
    """Copy the adapter in ``source`` beside its published folder, flushed and hashed.

    Nothing visible changes: the staging name is unique per host, process, attempt and call.
    """
    final = published_adapter_dir(adapters_dir, model_name)
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
