"""The fine-tuned model or checkpoint a job continues from: its base, its adapter folder and its block layout.

A job may name a fine-tuned model (``ft:...``) or one of its checkpoints (``ft:...:ckpt-step-<n>``) of its own
project as its ``model``: it then trains that adapter's base model, starting from its blocks. The API checks
the name and inherits the layout when the job is created; the worker finds the folder again when it starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from diablo_core.methods.diablo.config import CONFIG_FILE, WEIGHTS_FILE
from registry.artifacts import get_adapter
from registry.models import Checkpoint, Job
from registry.storage import stored_path

# The adapter settings that decide which tensors exist and their shapes: a child job keeps the parent's.
LAYOUT_FIELDS = ("num_blocks", "target_modules", "layers")


@dataclass(frozen=True)
class ParentAdapter:
    """A job's parent: its name, the base model it was trained on, its folder and its adapter config."""

    name: str
    base_model: str
    directory: Path
    config: dict[str, Any]

    def layout(self) -> dict[str, Any]:
        """``num_blocks``, ``target_modules`` and ``layers`` as the parent was trained with."""
        return {name: self.config.get(name) for name in LAYOUT_FIELDS}


def _read(name: str, base_model: str, directory: Path) -> ParentAdapter | None:
    """The parent in ``directory``, or None when its files are gone (deleted or pruned)."""
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not (directory / WEIGHTS_FILE).is_file():
        return None
    return ParentAdapter(name=name, base_model=base_model, directory=directory, config=config)


def find_parent(session: Session, name: str, project_id: str, adapters_dir: Path) -> ParentAdapter | None:
    """The project's fine-tuned model or checkpoint called ``name`` with its files, or None."""
    adapter = get_adapter(session, name, project_id)
    if adapter is not None:
        return _read(name, adapter.base_model, stored_path(adapter.storage_path, adapters_dir))
    statement = (
        select(Checkpoint.storage_path, Job.model)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.fine_tuned_model_checkpoint == name, Job.project_id == project_id)
        .limit(1)
    )
    row = session.execute(statement).first()
    if row is None or row.storage_path is None:
        return None
    return _read(name, row.model, stored_path(row.storage_path, adapters_dir))
