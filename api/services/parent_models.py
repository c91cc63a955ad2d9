"""Continuing from a fine-tuned model: a job whose ``model`` is a fine-tuned model or one of its checkpoints.

The job trains the parent's base model from the parent's blocks, so it keeps the parent's layout
(``num_blocks``, ``target_modules``, ``layers``), which it then echoes; a conflicting explicit value is a 400
naming the field.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from api.schemas.jobs import JobCreate
from diablo_core.spec import DiaBloHyperparameters, ResolvedJobSpec
from registry.parent_models import LAYOUT_FIELDS, ParentAdapter, find_parent
from registry.settings import Settings


def find_parent_model(session: Session, settings: Settings, project: str, name: str) -> ParentAdapter:
    """The project's fine-tuned model or checkpoint ``name`` with its files; 404 ``model_not_found``."""
    parent = find_parent(session, name, project, settings.adapters_dir)
    if parent is None:
        raise not_found("model", name, code="model_not_found", param="model")
    return parent


def _given_layout(body: JobCreate) -> dict[str, Any]:
    """The layout fields the request set explicitly under ``method.diablo.hyperparameters``."""
    given = body.method.chosen_hyperparameters() if body.method else None
    if not isinstance(given, DiaBloHyperparameters):
        return {}
    return {name: getattr(given, name) for name in LAYOUT_FIELDS if name in given.model_fields_set}


def inherit_layout(spec: ResolvedJobSpec, body: JobCreate, parent: ParentAdapter) -> ResolvedJobSpec:
    """``spec`` with the parent's layout; 400 ``parent_layout_conflict`` for an explicit other value."""
    layout = parent.layout()
    method_type = body.method.type if body.method else "diablo"
    for name, value in _given_layout(body).items():
        if value != layout[name]:
            message = (
                f"{name} is {value!r}, but {parent.name} was trained with {layout[name]!r}; a job continuing "
                f"from a fine-tuned model keeps its {name} (leave it out)"
            )
            param = f"method.{method_type}.hyperparameters.{name}"
            raise APIError(400, message, code="parent_layout_conflict", param=param)
    return spec.model_copy(update=layout)
