"""The base models this service can fine-tune, known without loading torch or any weights.

Two kinds: the default model (``"default"`` is an alias of its canonical hub id) and local checkpoint
directories under ``<data_dir>/models/<name>/`` holding a ``config.json`` (id: ``<name>``). The directory
``diablo_core`` converts the default model into is the default model, not a separate one. Workers turn an id
into what ``diablo_core.models.loading.load_base_model`` takes with ``load_source``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diablo_core.models import catalog
from diablo_core.models.catalog import DEFAULT_CHECKPOINT_DIR, DEFAULT_MODEL_ALIAS, DEFAULT_MODEL_ID
from registry.settings import Settings
from registry.storage import models_dir

# Listed as created at the default model's release (2024-10-31); local checkpoints use their mtime.
DEFAULT_MODEL_CREATED = 1730332800


@dataclass(frozen=True)
class BaseModelInfo:
    """One base model: its id, when it appeared, and (for local checkpoints) its directory."""

    id: str
    created: int
    path: Path | None = None


def _local_models(settings: Settings) -> list[BaseModelInfo]:
    root = models_dir(settings)
    if not root.is_dir():
        return []
    found = []
    for directory in sorted(root.iterdir()):
        hidden = directory.name.startswith(".") or directory.name == DEFAULT_CHECKPOINT_DIR
        if not hidden and (directory / "config.json").is_file():
            found.append(BaseModelInfo(directory.name, int(directory.stat().st_mtime), directory))
    return found


def list_base_models(settings: Settings) -> list[BaseModelInfo]:
    """Every base model: the default model first, then local checkpoints by name."""
    return [BaseModelInfo(DEFAULT_MODEL_ID, DEFAULT_MODEL_CREATED), *_local_models(settings)]


def canonical_model_id(name: str, settings: Settings) -> str:
    """The alias ``"default"`` becomes the configured default model (``settings.default_model``), and the
    built-in default model's alias its canonical id (``diablo_core.models.catalog``)."""
    return catalog.canonical_model_id(name, settings.default_model)


def find_base_model(name: str, settings: Settings) -> BaseModelInfo | None:
    """The base model called ``name`` (an id or the ``"default"`` alias), or None if there is none."""
    wanted = canonical_model_id(name, settings)
    return next((model for model in list_base_models(settings) if model.id == wanted), None)


def is_fine_tuned_name(name: str) -> bool:
    """True for fine-tuned model names (``ft:<base>:...``), which are not base models."""
    return name.startswith("ft:")


def load_source(model_id: str, settings: Settings) -> str:
    """What to pass to ``load_base_model`` for a base model id: ``"default"`` or a checkpoint directory.

    Raises:
        LookupError: If ``model_id`` is no known base model.
    """
    model = find_base_model(model_id, settings)
    if model is None:
        raise LookupError(f"unknown base model {model_id!r}")
    return DEFAULT_MODEL_ALIAS if model.path is None else str(model.path)
