"""Serving DiaBlo adapters: per-row multi-adapter batches on one shared model, a cache, the engine.

Exports resolve lazily (PEP 562), like ``diablo_core``'s: the request side (``AdapterRef``,
``GenerationRequest``, ``RequestHandle``, the engine's errors) is torch-free, so the API can name it
without loading torch; the engine and the adapter cache load torch when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diablo_core.lazy_exports import lazy_exports

_EXPORTS: dict[str, str] = {
    "AdapterCache": "diablo_core.serving.adapter_cache",
    "LoadedAdapter": "diablo_core.serving.adapter_cache",
    "read_adapter": "diablo_core.serving.adapter_cache",
    "AdapterRef": "diablo_core.serving.adapter_ref",
    "InferenceEngine": "diablo_core.serving.engine",
    "ContextLengthError": "diablo_core.serving.errors",
    "EngineBusyError": "diablo_core.serving.errors",
    "EngineClosedError": "diablo_core.serving.errors",
    "GenerationRequest": "diablo_core.serving.handle",
    "RequestHandle": "diablo_core.serving.handle",
    "MultiAdapterLinear": "diablo_core.serving.multi_adapter",
    "MultiAdapterModel": "diablo_core.serving.multi_adapter",
    "merge_blocks": "diablo_core.serving.multi_adapter",
    "EngineStats": "diablo_core.serving.stats",
}

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

if TYPE_CHECKING:
    from diablo_core.serving.adapter_cache import AdapterCache, LoadedAdapter, read_adapter
    from diablo_core.serving.adapter_ref import AdapterRef
    from diablo_core.serving.engine import InferenceEngine
    from diablo_core.serving.errors import ContextLengthError, EngineBusyError, EngineClosedError
    from diablo_core.serving.handle import GenerationRequest, RequestHandle
    from diablo_core.serving.multi_adapter import MultiAdapterLinear, MultiAdapterModel, merge_blocks
    from diablo_core.serving.stats import EngineStats

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
