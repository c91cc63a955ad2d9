"""Starting the inference engine: the only API module that imports torch and transformers.

``api.services.inference`` imports it inside ``InferenceService.load`` (the first inference request, or
start-up with ``preload_model``), so ``import api.main`` loads neither; the import contract in
pyproject.toml ignores exactly that one lazy edge.
"""

from __future__ import annotations

import logging

from diablo_core.devices import resolve_device
from diablo_core.models.loading import load_base_model
from diablo_core.precision.hardware import apply_torch_threads, resolve_inference_dtype, torch_dtype
from diablo_core.serving.adapter_ref import AdapterRef
from diablo_core.serving.engine import InferenceEngine
from registry.base_models import load_source
from registry.settings import Settings

logger = logging.getLogger("api.inference")


def start_engine(settings: Settings, model_id: str, merged: AdapterRef | None) -> InferenceEngine:
    """Loads ``model_id`` on the configured device and starts an engine with the server's limits."""
    device = resolve_device(settings.device).name
    threads = apply_torch_threads(settings.torch_threads)
    dtype = resolve_inference_dtype(settings.inference_dtype, device)
    source = load_source(model_id, settings)
    loaded = load_base_model(
        source,
        data_dir=settings.data_dir,
        device=device,
        dtype=torch_dtype(dtype),
        quantization=settings.inference_quantization,
    )
    engine = InferenceEngine(
        loaded.model,
        loaded.tokenizer,
        identity=loaded.identity,
        max_batch_size=settings.inference_max_batch,
        max_adapters=settings.adapter_cache_count,
        max_adapter_bytes=settings.adapter_cache_bytes,
        merged_adapter=merged,
        max_waiting=settings.inference_max_waiting,
        max_waiting_per_tenant=settings.inference_max_waiting_per_project,
        max_rows_per_tenant=settings.inference_max_rows_per_project or None,  # 0: the batch is the cap
        prefill_chunk_tokens=settings.inference_prefill_chunk_tokens,
        torch_threads=settings.torch_threads,
        allow_quantization_mismatch=settings.inference_allow_quantization_mismatch,
    )
    logger.info(
        "serving %s on %s in %s (quantization: %s) with %d torch threads (merged adapter: %s)",
        model_id, device, dtype, settings.inference_quantization, threads, settings.merged_adapter,
    )  # fmt: skip
    return engine
