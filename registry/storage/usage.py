"""How many bytes a project keeps: its uploaded files plus its adapters, from the sizes the registry records.

Checkpoints are not counted: they have no recorded size, and a job keeps at most ``keep_checkpoints`` of
them, deleted with its model.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.models import Adapter, File


def storage_used(session: Session, project: str) -> int:
    """Bytes of ``project``'s files and adapters, in one query."""
    files = select(func.coalesce(func.sum(File.bytes), 0)).where(File.project_id == project)
    adapters = select(func.coalesce(func.sum(Adapter.size_bytes), 0)).where(Adapter.project_id == project)
    row = session.execute(select(files.scalar_subquery(), adapters.scalar_subquery())).one()
    return int(row[0]) + int(row[1])
