"""A job's result files: its step-metrics CSV, stored beside uploads and listed as a file of the project.

OpenAI lists one ``step_metrics.csv`` per finished job in ``result_files``, with purpose
``fine-tune-results``; it is downloaded through ``/v1/files/{id}/content`` like any other file of the
project. The columns are ``registry.job_metrics.RESULT_COLUMNS``.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from registry.ids import FILE_PREFIX, new_id
from registry.job_metrics import results_csv
from registry.models import File
from registry.settings import Settings
from registry.storage import replace_durably

RESULTS_PURPOSE = "fine-tune-results"
RESULTS_FILENAME = "step_metrics.csv"


def result_file_path(settings: Settings, file_id: str) -> Path:
    """Where the result file ``file_id`` is stored."""
    return settings.files_dir / f"{file_id}.csv"


def add_results_file(session: Session, settings: Settings, project_id: str, history: list[dict]) -> File:
    """Write a run's step-metrics CSV durably and record it as a file of ``project_id`` (flushed).

    Args:
        session: The transaction that finishes the job (the file shows with the job's ``result_files``).
        settings: Where files are stored.
        project_id: The job's project: only it can see and download the file.
        history: Training's per-step and per-evaluation records (``TrainingResult.history``).
    """
    content = results_csv(history).encode()
    file_id = new_id(FILE_PREFIX)
    target = result_file_path(settings, file_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=target.parent, suffix=".part", delete=False) as handle:
        handle.write(content)
    replace_durably(Path(handle.name), target)
    row = File(id=file_id, project_id=project_id, filename=RESULTS_FILENAME, purpose=RESULTS_PURPOSE)
    row.bytes, row.sha256, row.storage_path = len(content), hashlib.sha256(content).hexdigest(), str(target)
    row.status = "processed"
    session.add(row)
    session.flush()
    return row
