"""Where a re-delivered job continues: the newest registered checkpoint that verifies, or step 1 and why.

Only checkpoints the registry lists are candidates (the API shows the same list), newest first. One is
used when its folder holds the trainer state and its weights file still has the sha256 recorded when it
was written; otherwise the next older one is tried, and the reasons are kept for the job's events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from diablo_core.training.checkpoints import is_resumable
from registry.models import Checkpoint
from registry.storage import file_sha256

MAX_REASONS = 3


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to resume from (``path`` None: start over), and why newer ones were passed over."""

    path: Path | None = None
    step: int | None = None
    name: str | None = None
    skipped: list[str] = field(default_factory=list)

    def start_over_reason(self) -> str:
        """Why the job starts from step 1, for its events."""
        if not self.skipped:
            return "no checkpoint was saved before the previous attempt stopped"
        return "; ".join(self.skipped[:MAX_REASONS])


def find_resume_point(session: Session, job_id: str) -> ResumePoint:
    """The newest listed checkpoint of ``job_id`` that is resumable and matches its recorded sha256."""
    rows = session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step_number.desc())
    )
    skipped: list[str] = []
    for row in rows:
        problem = _problem(row)
        if problem is None:
            path = Path(row.storage_path)
            return ResumePoint(path, row.step_number, row.fine_tuned_model_checkpoint, skipped)
        skipped.append(f"checkpoint step-{row.step_number} {problem}")
    return ResumePoint(skipped=skipped)


def _problem(row: Checkpoint) -> str | None:
    """Why ``row`` cannot be resumed from, or None if it can."""
    if row.storage_path is None or not Path(row.storage_path).is_dir():
        return "has no files (pruned or removed)"
    path = Path(row.storage_path)
    if not is_resumable(path):
        return "holds no trainer state"
    if row.sha256 is None:
        return "has no recorded sha256"
    if file_sha256(path / WEIGHTS_FILE) != row.sha256:
        return "does not match the sha256 recorded when it was written"
    return None
