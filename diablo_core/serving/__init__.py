"""Serving DiaBlo adapters: per-row multi-adapter batches on one shared model, a cache, the engine."""

from diablo_core.serving.adapter_cache import AdapterCache, AdapterRef, LoadedAdapter, read_adapter
from diablo_core.serving.engine import InferenceEngine
from diablo_core.serving.errors import ContextLengthError, EngineBusyError, EngineClosedError
from diablo_core.serving.handle import GenerationRequest, RequestHandle
from diablo_core.serving.multi_adapter import MultiAdapterLinear, MultiAdapterModel, merge_blocks
from diablo_core.serving.stats import EngineStats

__all__ = [
    "AdapterCache",
    "AdapterRef",
    "ContextLengthError",
    "EngineBusyError",
    "EngineClosedError",
    "EngineStats",
    "GenerationRequest",
    "InferenceEngine",
    "LoadedAdapter",
    "MultiAdapterLinear",
    "MultiAdapterModel",
    "RequestHandle",
    "merge_blocks",
    "read_adapter",
]
