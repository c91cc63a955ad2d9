"""``diablo chat``: streamed answers over SSE, one-shot and line by line.

The chat endpoint (``POST /v1/chat/completions``) was not part of the API when this was written, so these
tests serve a stand-in that speaks the OpenAI streaming shape and records every request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.cli.conftest import diablo

pytestmark = pytest.mark.integration


def sse(chunk: dict[str, Any] | str) -> str:
    return f"data: {chunk if isinstance(chunk, str) else json.dumps(chunk)}\n\n"


def chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "choices": [choice]}


def answer_events(text: str) -> Iterator[str]:
    """The stream of ``text``: a role chunk, three-character pieces, a finish chunk, then [DONE]."""
    yield ": keep-alive comment\n\n"
    yield sse(chunk({"role": "assistant"}))
    for start in range(0, len(text), 3):
        yield sse(chunk({"content": text[start : start + 3]}))
    yield sse(chunk({}, "stop"))
    yield sse("[DONE]")
    yield sse(chunk({"content": "after done"}))


def stand_in(requests: list[dict[str, Any]]) -> FastAPI:
    """Echoes the last user message; models "missing", "broken" and "garbled" get errors."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        requests.append(body)
        if body["model"] == "missing":
            error = {"message": "The model 'missing' does not exist", "type": "invalid_request_error"}
            return JSONResponse({"error": error | {"param": "model", "code": "model_not_found"}}, 404)
        if body["model"] == "broken":
            error = {"message": "generation failed", "type": "server_error", "code": "internal_error"}
            return StreamingResponse(iter([sse(chunk({"content": "par"})), sse({"error": error})]))
        if body["model"] == "garbled":
            return StreamingResponse(iter(["data: {not json\n\n"]), media_type="text/event-stream")
        text = f"you said: {body['messages'][-1]['content']}"
        return StreamingResponse(answer_events(text), media_type="text/event-stream")

    return app


ChatServer = tuple[str, list[dict[str, Any]]]


@pytest.fixture
def chat_server(serve_app: Callable[[FastAPI], str]) -> ChatServer:
    """The stand-in's URL and the requests it receives."""
    requests: list[dict[str, Any]] = []
    return serve_app(stand_in(requests)), requests


def test_one_message_streams_the_answer_and_exits(chat_server: ChatServer) -> None:
    url, requests = chat_server
    args = ["--system", "Be terse.", "--max-tokens", "5", "--temperature", "0", "--message", "hi"]
    result = diablo(url, "chat", "ft:base:x:1", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == "you said: hi\n"
    system, user = {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}
    sampling = {"max_tokens": 5, "temperature": 0.0, "stream": True}
    assert requests == [{"model": "ft:base:x:1", "messages": [system, user], **sampling}]


def test_lines_from_stdin_make_one_conversation(chat_server: ChatServer) -> None:
    url, requests = chat_server
    result = diablo(url, "chat", "default", input="first\n\n  second  \n/exit\nignored\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "you said: first\nyou said: second\n"
    assert len(requests) == 2
    assert requests[1]["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "you said: first"},
        {"role": "user", "content": "second"},
    ]
    assert "max_tokens" not in requests[0] and "temperature" not in requests[0]


def test_api_errors_end_the_chat_with_exit_1(chat_server: ChatServer) -> None:
    url, _ = chat_server
    missing = diablo(url, "chat", "missing", "--message", "hi")
    assert missing.exit_code == 1 and missing.stdout == ""
    assert "model_not_found" in missing.stderr and "does not exist" in missing.stderr
    broken = diablo(url, "chat", "broken", "--message", "hi")
    assert broken.exit_code == 1
    assert broken.stdout == "par\n" and "generation failed" in broken.stderr
    garbled = diablo(url, "chat", "garbled", "--message", "hi")
    assert garbled.exit_code == 1 and "invalid_stream" in garbled.stderr


def test_bad_options_are_usage_errors(chat_server: ChatServer) -> None:
    url, requests = chat_server
    result = diablo(url, "chat", "default", "--temperature", "3", "--message", "hi")
    assert result.exit_code == 2 and requests == []
