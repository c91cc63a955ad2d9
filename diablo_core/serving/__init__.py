"""Serving DiaBlo adapters: per-row multi-adapter batches on one shared model, a cache, the engine."""

from diablo_core.serving.adapter_cache import AdapterCache, AdapterRef, LoadedAdapter, read_adapter
from diablo_core.serving.engine import EngineClosedError, InferenceEngine
from diablo_core.serving.handle import GenerationRequest, RequestHandle
from diablo_core.serving.multi_adapter import MultiAdapterLinear, MultiAdapterModel, merge_blocks

__all__ = [
    "AdapterCache",
    "AdapterRef",
    "EngineClosedError",
    "GenerationRequest",
    "InferenceEngine",
    "LoadedAdapter",
    "MultiAdapterLinear",
    "MultiAdapterModel",
    "RequestHandle",
    "merge_blocks",
    "read_adapter",
]
