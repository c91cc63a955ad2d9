"""Which weights a request's ``model`` names: the served base model, or an adapter by its sha256 and path.

Fine-tuned models come from the registry's adapter rows (their sha256 is recorded at publication, and the
engine checks the file against it). Checkpoint names (``<model>:ckpt-step-<n>``) are servable too, checked
against the sha256 recorded when the checkpoint was written; rows older than that record (migration 0003)
have none, so theirs is computed from the file, memoized by path, size and mtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from diablo_core.methods.diablo.config import WEIGHTS_FILE
from diablo_core.serving.adapter_ref import AdapterRef
from registry.artifacts import get_adapter
from registry.base_models import canonical_model_id, find_base_model
from registry.db import get_sessionmaker
from registry.models import Checkpoint, Job
from registry.settings import Settings
from registry.storage import cached_file_sha256, stored_path


@dataclass(frozen=True)
class AdapterFiles:
    """A fine-tuned model's or checkpoint's adapter: its weights' sha256, its folder, its base model id."""

    sha256: str
    directory: Path
    base_model: str


def served_model_id(settings: Settings) -> str:
    """The canonical id of the base model this process serves (``settings.default_model``)."""
    return canonical_model_id(settings.default_model, settings)


def _stored_path(storage_path: str, settings: Settings) -> Path:
    return stored_path(storage_path, settings.adapters_dir)


def _check_base(model_id: str, base_model: str, settings: Settings) -> None:
    served = served_model_id(settings)
    if canonical_model_id(base_model, settings) != served:
        raise APIError(
            400,
            f"Model '{model_id}' was trained on base model '{base_model}', but this server serves "
            f"'{served}'; send it to a server whose DIABLO_DEFAULT_MODEL is '{base_model}'",
            code="adapter_base_mismatch",
            param="model",
        )


def _checkpoint_files(
    session: Session, settings: Settings, project: str | None, name: str
) -> AdapterFiles | None:
    statement = select(Checkpoint.storage_path, Checkpoint.sha256, Job.model)
    statement = statement.join(Job, Job.id == Checkpoint.job_id)
    statement = statement.where(Checkpoint.fine_tuned_model_checkpoint == name)
    if project is not None:
        statement = statement.where(Job.project_id == project)
    row = session.execute(statement.limit(1)).first()
    if row is None or row.storage_path is None:
        return None
    directory = _stored_path(row.storage_path, settings)
    if not (directory / WEIGHTS_FILE).is_file():  # pruned after it was recorded
        return None
    if row.sha256 is not None:
        return AdapterFiles(row.sha256, directory, row.model)
    try:
        return AdapterFiles(cached_file_sha256(directory / WEIGHTS_FILE), directory, row.model)
    except OSError:  # pruned meanwhile
        return None


def find_adapter_files(
    session: Session, settings: Settings, project: str | None, model_id: str
) -> AdapterFiles | None:
    """The adapter of the fine-tuned model or checkpoint ``model_id`` in ``project`` (any when None)."""
    adapter = get_adapter(session, model_id, project)
    if adapter is not None:
        return AdapterFiles(adapter.sha256, _stored_path(adapter.storage_path, settings), adapter.base_model)
    return _checkpoint_files(session, settings, project, model_id)


def adapter_ref(settings: Settings, project: str | None, model_id: str) -> AdapterRef | None:
    """The adapter ``model_id`` names in ``project`` (any project when None), or None for the served base.

    Raises:
        APIError: 404 ``model_not_found``; 400 ``adapter_base_mismatch`` for an adapter of another base
            model; 400 ``model_not_served`` for a base model other than the served one.
    """
    with get_sessionmaker(settings.database_url)() as session:
        files = find_adapter_files(session, settings, project, model_id)
    if files is not None:
        _check_base(model_id, files.base_model, settings)
        return AdapterRef(files.sha256, files.directory)
    base = find_base_model(model_id, settings)
    if base is None:
        raise not_found("model", model_id, code="model_not_found", param="model")
    if base.id != served_model_id(settings):
        served = served_model_id(settings)
        message = f"Model '{model_id}' is a base model this server does not serve; it serves '{served}'"
        raise APIError(400, message, code="model_not_served", param="model")
    return None
