"""What a job leaves behind: checkpoints, adapters, the model names they are served under, durable files.

``fsync_tree`` is the one place that makes written files survive a power loss; a file or folder is
fsynced before the registry commit that makes it visible (a row that points at an empty file is worse
than no row).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from registry.ids import id_part
from registry.models import DEFAULT_PROJECT, Adapter, Checkpoint
from registry.pagination import Page, paginate

SUFFIX_MAX_LENGTH = 64
_SUFFIX_FORBIDDEN = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_suffix(suffix: str | None) -> str:
    """Return ``suffix`` reduced to ``[A-Za-z0-9._-]`` (other runs become ``-``), at most 64 characters."""
    if not suffix:
        return ""
    return _SUFFIX_FORBIDDEN.sub("-", suffix).strip("-")[:SUFFIX_MAX_LENGTH]


def fine_tuned_model_name(base_model: str, job_id: str, suffix: str | None = None) -> str:
    """Return the name a job's adapter is served under: ``ft:<base>:<suffix>:<id part>``.

    Args:
        base_model: The base model id; may contain ``/`` (a hub id).
        job_id: The job's id; its part after ``ftjob-`` makes the name unique.
        suffix: The user's suffix, sanitized here; empty when absent (``ft:<base>::<id part>``).
    """
    return f"ft:{base_model}:{sanitize_suffix(suffix)}:{id_part(job_id)}"


def checkpoint_model_name(fine_tuned_model: str, step_number: int) -> str:
    """Return the name of a checkpoint's adapter: ``<fine_tuned_model>:ckpt-step-<step>``."""
    return f"{fine_tuned_model}:ckpt-step-{step_number}"


def add_checkpoint(
    session: Session,
    job_id: str,
    step_number: int,
    fine_tuned_model_checkpoint: str,
    *,
    storage_path: str | None = None,
    metrics: dict[str, Any] | None = None,
    sha256: str | None = None,
) -> Checkpoint:
    """Record a checkpoint of a job; saving the same step again (a re-delivered job) updates it.

    ``sha256`` is the digest of its weights file when it was written; resuming and serving check against it.
    """
    checkpoint = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step_number == step_number)
    )
    if checkpoint is None:
        checkpoint = Checkpoint(job_id=job_id, step_number=step_number)
        session.add(checkpoint)
    checkpoint.fine_tuned_model_checkpoint = fine_tuned_model_checkpoint
    checkpoint.storage_path = storage_path
    checkpoint.metrics = metrics or {}
    checkpoint.sha256 = sha256
    session.flush()
    return checkpoint


def list_checkpoints(
    session: Session, job_id: str, *, after: str | None = None, limit: int = 10
) -> Page[Checkpoint]:
    """Return a job's checkpoints newest first, starting after checkpoint id ``after``."""
    statement = select(Checkpoint).where(Checkpoint.job_id == job_id)
    return paginate(session, statement, Checkpoint.id, after=after, limit=limit)


def register_adapter(
    session: Session,
    *,
    name: str,
    job_id: str | None,
    base_model: str,
    storage_path: str,
    sha256: str,
    size_bytes: int,
    base_model_fingerprint: str | None = None,
    config: dict[str, Any] | None = None,
    project_id: str = DEFAULT_PROJECT,
    parent_model: str | None = None,
) -> Adapter:
    """Record an adapter under its model name; registering the same name again replaces its record.

    Args:
        name: The fine-tuned model name (see ``fine_tuned_model_name``), the adapter's key.
        job_id: The job that trained it, if any.
        base_model: The base model id it applies to.
        storage_path: Where its weights are stored.
        sha256: The hex digest of the stored weights, checked before loading.
        size_bytes: The size of the stored weights.
        base_model_fingerprint: What identifies the exact base weights it was trained on.
        config: The adapter's configuration (targets, block layout) as JSON.
        project_id: The project that owns it.
        parent_model: The fine-tuned model or checkpoint its training started from, if any.
    """
    adapter = session.get(Adapter, name)
    if adapter is None:
        adapter = Adapter(name=name)
        session.add(adapter)
    adapter.project_id = project_id
    adapter.job_id = job_id
    adapter.base_model = base_model
    adapter.base_model_fingerprint = base_model_fingerprint
    adapter.storage_path = storage_path
    adapter.sha256 = sha256
    adapter.size_bytes = size_bytes
    adapter.config = config
    adapter.parent_model = parent_model
    session.flush()
    return adapter


def get_adapter(session: Session, name: str, project_id: str | None = None) -> Adapter | None:
    """Return the adapter served as ``name``, or None if there is none (in ``project_id``)."""
    adapter = session.get(Adapter, name)
    if adapter is None or (project_id is not None and adapter.project_id != project_id):
        return None
    return adapter


def list_adapters(session: Session, *, project_id: str | None = None) -> list[Adapter]:
    """Return adapters newest first, optionally of one project."""
    statement = select(Adapter).order_by(Adapter.created_at.desc(), Adapter.name.desc())
    if project_id is not None:
        statement = statement.where(Adapter.project_id == project_id)
    return list(session.scalars(statement))


def delete_adapter(session: Session, name: str, project_id: str | None = None) -> bool:
    """Delete the adapter record ``name`` (its files stay for the caller to remove); True if one existed."""
    statement = delete(Adapter).where(Adapter.name == name)
    if project_id is not None:
        statement = statement.where(Adapter.project_id == project_id)
    result = session.execute(statement, execution_options={"synchronize_session": "fetch"})
    return result.rowcount == 1
