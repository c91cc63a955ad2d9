"""Inference: the served base model in one engine per process, request models resolved to adapters.

The engine (``app.state.inference``) is created on the first inference request, or at start-up with
``settings.preload_model``; control-plane routes never create it. The request's ``model`` is resolved from
the registry on every request, so a fine-tuned model is servable as soon as its job succeeds, unservable as
soon as it is deleted, and a re-registered one serves its new weights: the engine's cache is keyed by the
adapter's sha256, never by its name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import torch
from fastapi import FastAPI, Request

from api.errors import SERVER_ERROR, APIError
from api.rate_limit import Caller
from api.schemas.inference import SamplingParams
from api.services.adapter_refs import adapter_ref, served_model_id
from api.services.engine_errors import api_error
from diablo_core.errors import DiaBloError
from diablo_core.generation.decoding import GenerationResult
from diablo_core.models.loading import load_base_model
from diablo_core.serving import (
    AdapterRef,
    GenerationRequest,
    InferenceEngine,
    RequestHandle,
)
from registry.base_models import load_source
from registry.settings import Settings

logger = logging.getLogger("api.inference")
STATE_KEY = "inference"
# nginx's status for a client that closed its connection before the answer; nobody reads the answer.
CLIENT_CLOSED = 499
# Settle tasks of running requests: the event loop keeps only weak references to tasks.
_settling: set[asyncio.Task] = set()


def serving_device(setting: str) -> str:
    """``auto`` is CUDA when available, else CPU; other values (``cpu``, ``cuda:1``) are used as given."""
    setting = setting.strip().lower()
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


@dataclass
class InferenceService:
    """The served base model (``model_id``) inside an :class:`InferenceEngine`."""

    engine: InferenceEngine
    model_id: str

    @classmethod
    def load(cls, settings: Settings) -> InferenceService:
        """Loads ``settings.default_model`` (blocking: seconds to minutes) and starts its engine."""
        model_id = served_model_id(settings)
        merged = _merged_adapter(settings)
        device = serving_device(settings.device)
        loaded = load_base_model(
            load_source(model_id, settings),
            data_dir=settings.data_dir,
            device=device,
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
            allow_quantization_mismatch=settings.inference_allow_quantization_mismatch,
        )
        logger.info(
            "serving %s on %s (quantization: %s, merged adapter: %s)",
            model_id,
            device,
            settings.inference_quantization,
            settings.merged_adapter,
        )
        return cls(engine, model_id)

    def close(self) -> None:
        """Stops the engine; requests still running fail with ``engine_closed``."""
        self.engine.close()


def _merged_adapter(settings: Settings) -> AdapterRef | None:
    """The adapter named by ``settings.merged_adapter`` (any project), or None when unset."""
    if not settings.merged_adapter:
        return None
    merged = adapter_ref(settings, None, settings.merged_adapter)
    if merged is None:
        raise LookupError(f"merged_adapter {settings.merged_adapter!r} is a base model, not a fine-tuned one")
    return merged


def _load(settings: Settings) -> InferenceService:
    try:
        return InferenceService.load(settings)
    except (DiaBloError, LookupError, APIError) as error:
        logger.exception("the served model could not be loaded")
        detail = error.message if isinstance(error, DiaBloError | APIError) else str(error)
        message = f"The served model could not be loaded: {detail}"
        raise APIError(503, message, SERVER_ERROR, "model_unavailable") from error


async def get_inference(app: FastAPI) -> InferenceService:
    """The app's inference service, loading the model in a thread on first use (once, under a lock)."""
    service = getattr(app.state, STATE_KEY, None)
    if service is not None:
        return service
    if getattr(app.state, "inference_lock", None) is None:
        app.state.inference_lock = asyncio.Lock()
    async with app.state.inference_lock:
        service = getattr(app.state, STATE_KEY, None)
        if service is None:
            service = await asyncio.to_thread(_load, app.state.settings)
            setattr(app.state, STATE_KEY, service)
    return service


@asynccontextmanager
async def inference_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Preloads the model when configured; closes the engine when the app stops."""
    settings: Settings = app.state.settings
    if settings.preload_model and settings.inference_enabled:
        await get_inference(app)
    try:
        yield
    finally:
        service = getattr(app.state, STATE_KEY, None)
        if service is not None:
            setattr(app.state, STATE_KEY, None)
            await asyncio.to_thread(service.close)


def max_new_tokens(body: SamplingParams, settings: Settings) -> int:
    """The request's token budget; 400 ``invalid_value`` (param ``max_tokens``) above the server's limit."""
    limit, asked = settings.max_tokens_limit, body.asked_max_tokens
    if asked is not None and asked > limit:
        message = f"max_tokens is {asked}, more than this server's limit of {limit}"
        raise APIError(400, message, code="invalid_value", param="max_tokens")
    return asked or min(body.default_max_tokens or limit, limit)


def _generation_request(
    body: SamplingParams,
    project: str,
    budget: int,
    adapter: AdapterRef | None,
    messages: list[dict[str, str]] | None,
    prompt: str | None,
) -> GenerationRequest:
    return GenerationRequest(
        adapter=adapter,
        messages=messages,
        prompt=prompt,
        max_tokens=budget,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop,
        seed=body.seed,
        tenant=project,  # admission is fair across projects
    )


async def start(
    app: FastAPI,
    caller: Caller,
    body: SamplingParams,
    messages: list[dict[str, str]] | None = None,
    prompt: str | None = None,
) -> RequestHandle:
    """Resolves the model, loads the engine if needed and submits the request.

    Raises:
        APIError: 503 ``inference_disabled``; 400 for ``max_tokens``, the prompt or the model; 404
            ``model_not_found``; 429 ``rate_limit_exceeded``.
    """
    settings: Settings = app.state.settings
    if not settings.inference_enabled:
        message = "Inference is disabled on this server (DIABLO_INFERENCE_ENABLED=false); use a replica"
        raise APIError(503, message, SERVER_ERROR, "inference_disabled")
    budget = max_new_tokens(body, settings)
    caller.take_tokens(budget)
    try:
        handle = await _submit(app, caller, body, budget, messages, prompt)
    except BaseException:
        caller.settle_tokens(-budget)  # never queued: nothing was used
        raise
    task = asyncio.create_task(_settle(handle, caller, budget))
    _settling.add(task)
    task.add_done_callback(_settling.discard)
    return handle


async def _submit(
    app: FastAPI,
    caller: Caller,
    body: SamplingParams,
    budget: int,
    messages: list[dict[str, str]] | None,
    prompt: str | None,
) -> RequestHandle:
    settings: Settings = app.state.settings
    adapter = await asyncio.to_thread(adapter_ref, settings, caller.project, body.model)
    service = await get_inference(app)
    prompt_param = "messages" if prompt is None else "prompt"
    request = _generation_request(body, caller.project, budget, adapter, messages, prompt)
    try:
        return await asyncio.to_thread(service.engine.submit, request)  # tokenizes: off the event loop
    except ValueError as error:  # an empty prompt
        raise APIError(400, str(error), code="invalid_value", param=prompt_param) from error
    except Exception as error:
        raise api_error(error, body.model, prompt_param) from error


async def _settle(handle: RequestHandle, caller: Caller, budget: int) -> None:
    """Once the request ends: its prompt tokens are counted, the unused part of its budget given back."""
    try:
        result = await handle.aresult()
    except Exception:  # a failed request generated nothing the caller can use
        caller.settle_tokens(-budget)
        return
    caller.settle_tokens(result.prompt_tokens + result.completion_tokens - budget)


async def finish(handle: RequestHandle, model: str, request: Request) -> GenerationResult:
    """Awaits the request's result; cancels the request if the client disconnects or the caller is cancelled.

    Raises:
        APIError: 499 ``client_disconnected`` once the client has gone (nobody reads it); engine errors.
    """
    result = asyncio.ensure_future(handle.aresult())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        handle.cancel()
        result.cancel()
        raise
    finally:
        gone.cancel()
    if not result.done():
        handle.cancel()  # the engine drops the row at its next step
        result.cancel()
        raise APIError(CLIENT_CLOSED, "The client closed the connection", code="client_disconnected")
    try:
        return result.result()
    except Exception as error:
        raise api_error(error, model) from error


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects: the body is read, so ``http.disconnect`` is all that is left."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def open_stream(handle: RequestHandle, model: str) -> AsyncIterator[str]:
    """The request's text deltas, once the first one (or the end) has arrived.

    Waiting for the first delta makes a request that fails before producing text (a corrupted adapter, a
    base mismatch found on load) an HTTP error rather than an error inside a 200 stream.
    """
    deltas = aiter(handle)
    try:
        first = await anext(deltas)
    except StopAsyncIteration:
        first = None
    except asyncio.CancelledError:
        handle.cancel()
        raise
    except Exception as error:
        raise api_error(error, model) from error
    return _chained(first, deltas, handle)


async def _chained(first: str | None, rest: AsyncIterator[str], handle: RequestHandle) -> AsyncIterator[str]:
    try:
        if first is not None:
            yield first
        async for delta in rest:
            yield delta
    finally:
        if not handle.done:  # the client went away: free the batch row
            handle.cancel()
