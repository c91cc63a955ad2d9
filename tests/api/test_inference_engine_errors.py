"""Engine refusals as the API answers them: a too-long prompt is 400, a full queue is 429 with Retry-After."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from registry.api_keys import create_api_key
from registry.db import session_scope
from tests.api.conftest import assert_error
from tests.api.tiny_serving import TINY_MODEL, serving_settings, tiny_fixture  # noqa: F401 (fixtures by name)

SLOW_STEP_S = 0.05  # each forward of the slowed model: a request of 40 tokens holds its row 2 s or more


def chat(client: TestClient, content: str = "Hi", max_tokens: int = 4, key: str | None = None):
    body = {"model": TINY_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return client.post("/v1/chat/completions", json={**body, "temperature": 0}, headers=headers)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30  # bounds a hang only
    while not condition():
        assert time.monotonic() < deadline, "the engine never got there"
        time.sleep(0.01)


def slowed_engine(client: TestClient, key: str | None = None) -> Any:
    """The app's engine (loaded by one request) with every forward taking ``SLOW_STEP_S`` or more."""
    assert chat(client, key=key).status_code == 200
    engine = client.app.state.inference.engine
    engine.adapters.model.register_forward_pre_hook(lambda *_: time.sleep(SLOW_STEP_S))
    return engine


def test_a_prompt_beyond_the_context_window_is_400_context_length_exceeded(client):
    long = "word " * 100  # about 500 tokens of the byte-level tokenizer; the window is 512
    error = assert_error(chat(client, long, max_tokens=64), 400, "context_length_exceeded", "messages")
    assert "maximum context length is 512 tokens" in error["message"]
    body = {"model": TINY_MODEL, "prompt": long, "max_tokens": 64}
    assert_error(client.post("/v1/completions", json=body), 400, "context_length_exceeded", "prompt")
    assert chat(client, "word " * 50, max_tokens=64).status_code == 200  # inside the window


@pytest.mark.parametrize("settings", [{"inference_max_batch": 1, "inference_max_waiting": 1}], indirect=True)
def test_a_full_waiting_queue_is_429_engine_overloaded_with_retry_after(client):
    engine = slowed_engine(client)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(chat, client, max_tokens=40)
        wait_until(lambda: engine.stats.admitted == 2)  # the warm-up and this one
        waiting = pool.submit(chat, client, max_tokens=4)
        wait_until(lambda: len(engine._waiting) == 1)
        refused = chat(client)
        error = assert_error(refused, 429, "engine_overloaded")
        assert error["type"] == "rate_limit_exceeded" and "retry in" in error["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert running.result().status_code == 200 and waiting.result().status_code == 200


PER_PROJECT = {"auth": "on", "inference_max_batch": 2, "inference_max_rows_per_project": 1}


@pytest.mark.parametrize("settings", [PER_PROJECT | {"inference_max_waiting_per_project": 1}], indirect=True)
def test_a_flooding_project_gets_429_tenant_queue_full_while_another_is_served(client, settings):
    with session_scope(settings.database_url) as session:
        flooder, other = (create_api_key(session, project)[1] for project in ("flood", "calm"))
    engine = slowed_engine(client, flooder)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(chat, client, max_tokens=40, key=flooder)
        wait_until(lambda: engine.stats.admitted == 2)
        waiting = pool.submit(chat, client, max_tokens=4, key=flooder)
        wait_until(lambda: len(engine._waiting) == 1)  # the flooder's one row is taken: it waits
        refused = chat(client, key=flooder)
        assert_error(refused, 429, "tenant_queue_full")
        assert int(refused.headers["retry-after"]) >= 1
        assert chat(client, key=other).status_code == 200  # the second row is the other project's
        assert not running.done()  # served while the flood's first request still ran
        assert running.result().status_code == 200 and waiting.result().status_code == 200
