"""DiaBlo: diagonal-block fine-tuning of language models.

The public API is re-exported here. Exports resolve lazily (PEP 562) so that importing one light submodule,
such as ``diablo_core.datasets`` in the API's upload path, does not import the training stack with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "DiaBloConfig": "diablo_core.config",
    "DiaBloLinear": "diablo_core.layer",
    "apply_diablo": "diablo_core.model",
    "merge_diablo": "diablo_core.model",
    "unmerge_diablo": "diablo_core.model",
    "unload_diablo": "diablo_core.model",
    "trainable_parameters": "diablo_core.model",
    "diablo_modules": "diablo_core.model",
    "save_adapter": "diablo_core.adapter_io",
    "load_adapter": "diablo_core.adapter_io",
    "BaseModelIdentity": "diablo_core.identity",
    "model_identity": "diablo_core.identity",
    "LoadedModel": "diablo_core.base_models",
    "load_base_model": "diablo_core.base_models",
    "validate_dataset": "diablo_core.datasets",
    "read_examples": "diablo_core.datasets",
    "tokenize_examples": "diablo_core.tokenization",
    "generate": "diablo_core.generation",
    "stream_generate": "diablo_core.generation",
    "TrainingConfig": "diablo_core.training",
    "TrainingResult": "diablo_core.training",
    "TrainingProgress": "diablo_core.callbacks",
    "TrainingCallback": "diablo_core.callbacks",
    "train": "diablo_core.training",
    "DiaBloError": "diablo_core.errors",
    "AdapterError": "diablo_core.errors",
    "DatasetError": "diablo_core.errors",
    "ModelLoadError": "diablo_core.errors",
    "ConfigError": "diablo_core.errors",
}

__all__ = [
    "AdapterError",
    "BaseModelIdentity",
    "ConfigError",
    "DatasetError",
    "DiaBloConfig",
    "DiaBloError",
    "DiaBloLinear",
    "LoadedModel",
    "ModelLoadError",
    "TrainingCallback",
    "TrainingConfig",
    "TrainingProgress",
    "TrainingResult",
    "__version__",
    "apply_diablo",
    "diablo_modules",
    "generate",
    "load_adapter",
    "load_base_model",
    "merge_diablo",
    "model_identity",
    "read_examples",
    "save_adapter",
    "stream_generate",
    "tokenize_examples",
    "train",
    "trainable_parameters",
    "unload_diablo",
    "unmerge_diablo",
    "validate_dataset",
]

if TYPE_CHECKING:
    from diablo_core.adapter_io import load_adapter, save_adapter
    from diablo_core.base_models import LoadedModel, load_base_model
    from diablo_core.callbacks import TrainingCallback, TrainingProgress
    from diablo_core.config import DiaBloConfig
    from diablo_core.datasets import read_examples, validate_dataset
    from diablo_core.errors import AdapterError, ConfigError, DatasetError, DiaBloError, ModelLoadError
    from diablo_core.generation import generate, stream_generate
    from diablo_core.identity import BaseModelIdentity, model_identity
    from diablo_core.layer import DiaBloLinear
    from diablo_core.model import (
        apply_diablo,
        diablo_modules,
        merge_diablo,
        trainable_parameters,
        unload_diablo,
        unmerge_diablo,
    )
    from diablo_core.tokenization import tokenize_examples
    from diablo_core.training import TrainingConfig, TrainingResult, train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diablo_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
