"""Model objects: base models (``owned_by: "system"``) and the project's fine-tuned adapters."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from registry.base_models import BaseModelInfo
from registry.models import Adapter

SYSTEM_OWNER = "system"


class ModelPublic(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # Ours: the base model an adapter applies to, and the job that trained it (None for base models).
    base_model: str | None = None
    job_id: str | None = None
    # The fine-tuned model or checkpoint an adapter's training started from (None: a fresh adapter).
    parent: str | None = None

    @classmethod
    def from_base(cls, model: BaseModelInfo) -> ModelPublic:
        return cls(id=model.id, created=model.created, owned_by=SYSTEM_OWNER)

    @classmethod
    def from_adapter(cls, adapter: Adapter) -> ModelPublic:
        return cls(
            id=adapter.name,
            created=adapter.created_at,
            owned_by=adapter.project_id,
            base_model=adapter.base_model,
            job_id=adapter.job_id,
            parent=adapter.parent_model,
        )


class ModelsPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]
    has_more: bool = False


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
