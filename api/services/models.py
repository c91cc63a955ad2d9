"""Models: the base models and the project's fine-tuned adapters; deleting an adapter, its checkpoints and
their files (a deleted model's ``<name>:ckpt-step-<n>`` is no longer served either)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from api.schemas.models import ModelPublic
from registry.artifacts import delete_adapter, get_adapter, list_adapters
from registry.base_models import find_base_model, list_base_models
from registry.models import Adapter, Checkpoint
from registry.settings import Settings


def list_models(session: Session, settings: Settings, project: str) -> list[ModelPublic]:
    """Base models first, then the project's adapters newest first."""
    base = [ModelPublic.from_base(model) for model in list_base_models(settings)]
    return base + [ModelPublic.from_adapter(a) for a in list_adapters(session, project_id=project)]


def find_model(session: Session, settings: Settings, project: str, model_id: str) -> ModelPublic:
    """The model ``model_id`` (a base model, its ``"default"`` alias, or an adapter); 404 otherwise."""
    adapter = get_adapter(session, model_id, project)
    if adapter is not None:
        return ModelPublic.from_adapter(adapter)
    base = find_base_model(model_id, settings)
    if base is not None:
        return ModelPublic.from_base(base)
    raise not_found("model", model_id, code="model_not_found", param="model")


def _move_aside(path: Path, settings: Settings) -> tuple[Path, Path] | None:
    """Rename an adapter's files to a hidden folder entry (atomic) if they lie under ``adapters_dir``.

    Returns:
        ``(where they were, where they are now)``, or None when nothing was moved.
    """
    root = settings.adapters_dir.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(root) or resolved == root or not resolved.exists():
        return None
    trash = root / f".deleted-{secrets.token_hex(8)}"
    os.replace(resolved, trash)
    return resolved, trash


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _checkpoints_of(session: Session, adapter: Adapter) -> list[Checkpoint]:
    """The checkpoints served under the adapter's name (``<name>:ckpt-step-<n>``)."""
    named = Checkpoint.fine_tuned_model_checkpoint.startswith(f"{adapter.name}:ckpt-step-", autoescape=True)
    return list(session.scalars(select(Checkpoint).where(named)))


def delete_model(session: Session, settings: Settings, project: str, model_id: str) -> None:
    """Delete a fine-tuned model and its checkpoints: files moved aside, records deleted (committed), then
    files removed.

    Raises:
        APIError: 403 ``model_not_deletable`` for a base model; 404 ``model_not_found`` otherwise.
    """
    adapter = get_adapter(session, model_id, project)
    if adapter is None:
        if find_base_model(model_id, settings) is not None:
            message = f"Model '{model_id}' is a base model; only fine-tuned models can be deleted"
            raise APIError(403, message, code="model_not_deletable", param="model")
        raise not_found("model", model_id, code="model_not_found", param="model")
    checkpoints = _checkpoints_of(session, adapter)
    recorded = [adapter.storage_path] + [c.storage_path for c in checkpoints if c.storage_path]
    paths = [settings.adapters_dir / path for path in recorded]  # a relative path lies under adapters_dir
    moved = [pair for path in paths if (pair := _move_aside(path, settings)) is not None]
    try:
        ids = [checkpoint.id for checkpoint in checkpoints]
        session.execute(
            delete(Checkpoint).where(Checkpoint.id.in_(ids)), execution_options={"synchronize_session": False}
        )
        delete_adapter(session, model_id, project)
        session.commit()
    except BaseException:
        for original, aside in moved:
            os.replace(aside, original)
        raise
    for _, aside in moved:
        _remove(aside)
