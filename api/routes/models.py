"""``/v1/models``: base models and fine-tuned adapters; ids contain ``/`` and ``:`` (path converter)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentProject, SessionDep, SettingsDep
from api.schemas.models import ModelDeleted, ModelPublic, ModelsPublic
from api.services import models as service

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelsPublic)
def list_models(session: SessionDep, settings: SettingsDep, project: CurrentProject) -> ModelsPublic:
    """List base models and the project's fine-tuned models."""
    return ModelsPublic(data=service.list_models(session, settings, project))


@router.get("/{model_id:path}", response_model=ModelPublic)
def retrieve_model(
    session: SessionDep, settings: SettingsDep, project: CurrentProject, model_id: str
) -> ModelPublic:
    """Retrieve a base model or a fine-tuned model."""
    return service.find_model(session, settings, project, model_id)


@router.delete("/{model_id:path}", response_model=ModelDeleted)
def delete_model(
    session: SessionDep, settings: SettingsDep, project: CurrentProject, model_id: str
) -> ModelDeleted:
    """Delete a fine-tuned model and its adapter files."""
    service.delete_model(session, settings, project, model_id)
    return ModelDeleted(id=model_id)
