"""``/v1/chat/completions`` and ``/v1/completions``: JSON answers, or server-sent events with ``stream``.

A stream is ``data: <chunk JSON>`` events ending with ``data: [DONE]``. Chat streams open with a
``{"role": "assistant", "content": ""}`` delta and close with an empty delta carrying ``finish_reason``;
with ``stream_options.include_usage`` a chunk with empty ``choices`` and the ``usage`` comes last. An
engine failure after the stream started is sent as an ``{"error": ...}`` event (the openai client raises
it). A client that disconnects cancels its request in the engine, streamed or not. Both routes count against
the caller's rate limits (``api.rate_limit``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from sse_starlette import EventSourceResponse

from api.errors import SERVER_ERROR, APIError, error_body
from api.rate_limit import RateLimitedCaller
from api.schemas.inference import (
    CHAT_ID_PREFIX,
    COMPLETION_ID_PREFIX,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionCreate,
    CompletionCreate,
    SamplingParams,
    TextChoice,
    TextCompletion,
    Usage,
)
from api.services import inference as service
from api.services.engine_errors import api_error
from diablo_core.generation.result import GenerationResult
from diablo_core.serving.handle import RequestHandle
from registry.ids import new_id

router = APIRouter(prefix="/v1", tags=["inference"])
DONE = "[DONE]"
_STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


def _now() -> int:
    return int(time.time())


def _usage(result: GenerationResult) -> Usage:
    return Usage.of(result.prompt_tokens, result.completion_tokens)


async def _guarded(events: AsyncIterator[str], model: str) -> AsyncIterator[str]:
    """Passes ``events`` through; a failure becomes one error event (and no ``[DONE]``)."""
    try:
        async for event in events:
            yield event
    except Exception as error:
        failure = api_error(error, model)
        if not isinstance(failure, APIError):
            service.logger.exception("stream failed for model %s", model, exc_info=error)
            failure = APIError(500, "The server failed while streaming", SERVER_ERROR, "internal_error")
        yield json.dumps(error_body(failure.message, failure.type, failure.code, failure.param))


async def _chat_events(body: ChatCompletionCreate, handle: RequestHandle, deltas: AsyncIterator[str]):
    chunk = partial(ChatCompletionChunk, id=new_id(CHAT_ID_PREFIX), created=_now(), model=body.model)
    yield chunk(choices=[ChatChunkChoice(delta={"role": "assistant", "content": ""})]).model_dump_json()
    async for delta in deltas:
        yield chunk(choices=[ChatChunkChoice(delta={"content": delta})]).model_dump_json()
    reason = handle.result().finish_reason
    yield chunk(choices=[ChatChunkChoice(delta={}, finish_reason=reason)]).model_dump_json()
    if body.include_usage:
        yield chunk(choices=[], usage=_usage(handle.result())).model_dump_json()
    yield DONE


async def _text_events(body: CompletionCreate, handle: RequestHandle, deltas: AsyncIterator[str]):
    chunk = partial(TextCompletion, id=new_id(COMPLETION_ID_PREFIX), created=_now(), model=body.model)
    async for delta in deltas:
        yield chunk(choices=[TextChoice(text=delta)]).model_dump_json()
    reason = handle.result().finish_reason
    yield chunk(choices=[TextChoice(text="", finish_reason=reason)]).model_dump_json()
    if body.include_usage:
        yield chunk(choices=[], usage=_usage(handle.result())).model_dump_json()
    yield DONE


Events = Callable[[RequestHandle, AsyncIterator[str]], AsyncIterator[str]]


async def _stream_or_finish(
    request: Request,
    response: Response,
    caller: RateLimitedCaller,
    body: SamplingParams,
    handle: RequestHandle,
    events: Events,
) -> EventSourceResponse | GenerationResult:
    """The request's ``events`` as a stream when the body asks for one, else its finished result."""
    if body.stream:
        deltas = await service.open_stream(handle, body.model)
        guarded = _guarded(events(handle, deltas), body.model)
        return EventSourceResponse(guarded, sep="\n", headers=caller.headers())
    result = await service.finish(handle, body.model, request)
    response.headers.update(caller.headers())
    return result


@router.post("/chat/completions", response_model=ChatCompletion, responses=_STREAM_RESPONSE)
async def create_chat_completion(
    request: Request, response: Response, body: ChatCompletionCreate, caller: RateLimitedCaller
) -> ChatCompletion | EventSourceResponse:
    """Create a chat completion with a base or fine-tuned model."""
    messages = [message.as_template_message() for message in body.messages]
    handle = await service.start(request.app, caller, body, messages=messages)
    result = await _stream_or_finish(request, response, caller, body, handle, partial(_chat_events, body))
    if isinstance(result, EventSourceResponse):
        return result
    choice = ChatChoice(message=AssistantMessage(content=result.text), finish_reason=result.finish_reason)
    return ChatCompletion(model=body.model, choices=[choice], usage=_usage(result))


@router.post("/completions", response_model=TextCompletion, responses=_STREAM_RESPONSE)
async def create_completion(
    request: Request, response: Response, body: CompletionCreate, caller: RateLimitedCaller
) -> TextCompletion | EventSourceResponse:
    """Create a text completion of a prompt with a base or fine-tuned model."""
    handle = await service.start(request.app, caller, body, prompt=body.prompt)
    result = await _stream_or_finish(request, response, caller, body, handle, partial(_text_events, body))
    if isinstance(result, EventSourceResponse):
        return result
    choice = TextChoice(text=result.text, finish_reason=result.finish_reason)
    return TextCompletion(model=body.model, choices=[choice], usage=_usage(result))
