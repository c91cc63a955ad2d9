"""DiaBlo: diagonal-block fine-tuning of language models.

The public API is re-exported here. Exports resolve lazily (PEP 562) so that importing one light submodule,
such as ``diablo_core.data.datasets`` in the API's upload path, does not import the training stack with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diablo_core.lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "DiaBloConfig": "diablo_core.methods.diablo.config",
    "DiaBloLinear": "diablo_core.methods.diablo.layer",
    "apply_diablo": "diablo_core.methods.diablo.model",
    "merge_diablo": "diablo_core.methods.diablo.model",
    "unmerge_diablo": "diablo_core.methods.diablo.model",
    "unload_diablo": "diablo_core.methods.diablo.model",
    "trainable_parameters": "diablo_core.methods.diablo.model",
    "diablo_modules": "diablo_core.methods.diablo.model",
    "save_adapter": "diablo_core.methods.diablo.adapter_io",
    "load_adapter": "diablo_core.methods.diablo.adapter_io",
    "BaseModelIdentity": "diablo_core.models.identity",
    "model_identity": "diablo_core.models.identity",
    "LoadedModel": "diablo_core.models.loading",
    "load_base_model": "diablo_core.models.loading",
    "validate_dataset": "diablo_core.data.datasets",
    "read_examples": "diablo_core.data.datasets",
    "tokenize_examples": "diablo_core.data.tokenization",
    "generate": "diablo_core.generation.decoding",
    "stream_generate": "diablo_core.generation.decoding",
    "TrainingConfig": "diablo_core.spec.training",
    "TrainingResult": "diablo_core.training.loop",
    "TrainingProgress": "diablo_core.training.callbacks",
    "TrainingCallback": "diablo_core.training.callbacks",
    "train": "diablo_core.training.loop",
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
    from diablo_core.data.datasets import read_examples, validate_dataset
    from diablo_core.data.tokenization import tokenize_examples
    from diablo_core.errors import AdapterError, ConfigError, DatasetError, DiaBloError, ModelLoadError
    from diablo_core.generation.decoding import generate, stream_generate
    from diablo_core.methods.diablo.adapter_io import load_adapter, save_adapter
    from diablo_core.methods.diablo.config import DiaBloConfig
    from diablo_core.methods.diablo.layer import DiaBloLinear
    from diablo_core.methods.diablo.model import (
        apply_diablo,
        diablo_modules,
        merge_diablo,
        trainable_parameters,
        unload_diablo,
        unmerge_diablo,
    )
    from diablo_core.models.identity import BaseModelIdentity, model_identity
    from diablo_core.models.loading import LoadedModel, load_base_model
    from diablo_core.spec.training import TrainingConfig
    from diablo_core.training.callbacks import TrainingCallback, TrainingProgress
    from diablo_core.training.loop import TrainingResult, train

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
