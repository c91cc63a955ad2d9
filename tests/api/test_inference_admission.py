"""What the inference routes refuse before generating: OpenAI's sampling ranges and per-key rate limits."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.errors import APIError
from api.rate_limit import RateLimiter
from api.schemas.inference import MAX_STOP_CHARS
from registry.api_keys import create_api_key
from registry.db import session_scope
from tests.api.conftest import assert_error
from tests.api.tiny_serving import TINY_MODEL, serving_settings, tiny_fixture  # noqa: F401 (fixtures by name)

MESSAGES = [{"role": "user", "content": "Tell me a story"}]


def chat(client: TestClient, max_tokens: int = 4, headers: dict[str, str] | None = None, **body: Any):
    body = {"model": TINY_MODEL, "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0, **body}
    return client.post("/v1/chat/completions", json=body, headers=headers)


def complete(client: TestClient, **body: Any):
    body = {"model": TINY_MODEL, "prompt": "Once", "max_tokens": 4, "temperature": 0, **body}
    return client.post("/v1/completions", json=body)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.01}, "temperature"),
        ({"top_p": 1.0001}, "top_p"),
        ({"top_p": -1}, "top_p"),
        ({"seed": 2**64}, "seed"),
        ({"seed": 2**63}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"max_tokens": None, "max_completion_tokens": 0}, "max_completion_tokens"),
        ({"stop": ["x"] * 5}, "stop"),
        ({"stop": "x" * (MAX_STOP_CHARS + 1)}, "stop"),
        ({"stop": ["ok", "y" * (MAX_STOP_CHARS + 1)]}, "stop"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -2.01}, "frequency_penalty"),
    ],
)
def test_values_outside_openai_ranges_answer_400_naming_the_param(client, body, param):
    error = assert_error(chat(client, **body), 400, "invalid_value", param)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{param}:")
    assert getattr(client.app.state, "inference", None) is None  # refused before the model is loaded


@pytest.mark.parametrize(
    ("body", "param"),
    [({"temperature": 3}, "temperature"), ({"seed": 2**64}, "seed"), ({"stop": ["a"] * 5}, "stop")],
)
def test_text_completions_check_the_same_ranges(client, body, param):
    assert_error(complete(client, **body), 400, "invalid_value", param)


def test_a_too_long_stop_string_is_named_with_its_index_and_the_bound(client):
    error = assert_error(chat(client, stop=["ok", "y" * 300]), 400, "invalid_value", "stop")
    assert "stop[1]" in error["message"] and str(MAX_STOP_CHARS) in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"seed": -(2**63)},
        {"seed": 2**63 - 1, "temperature": 1.0},
        {"presence_penalty": -2, "frequency_penalty": 2},
        {"stop": ["z" * MAX_STOP_CHARS] * 4},
        {"temperature": 2, "top_p": 1},
        {"temperature": 1e-40, "seed": 1},  # in range: the engine must sample with it (no overflow)
        {"temperature": 1.0, "top_p": 1e-300},  # in range, though 0 in float32
        {"top_p": 5e-324, "temperature": 0.7},  # found by schemathesis
    ],
)
def test_values_at_the_edges_of_the_ranges_are_served(client, body):
    response = chat(client, **body)
    assert response.status_code == 200, response.text


def limited(client: TestClient, **limits: int) -> None:
    """Replace the app's limiter by one with ``limits`` on a clock that stands still: no refill."""
    client.app.state.rate_limiter = RateLimiter(limits, clock=lambda: 1000.0)


def assert_rate_limited(response: Any, kind: str, limit: int) -> dict[str, Any]:
    error = assert_error(response, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_exceeded"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers[f"x-ratelimit-limit-{kind}"] == str(limit)
    return error


def test_the_request_rate_limit_refuses_with_429_and_retry_after(client):
    limited(client, requests=2)
    assert chat(client).status_code == 200
    assert complete(client).status_code == 200  # both routes count against one bucket
    assert_rate_limited(chat(client), "requests", 2)
    assert_rate_limited(complete(client), "requests", 2)
    assert assert_rate_limited(chat(client), "requests", 2)["message"].startswith("Rate limit of 2 requests")


def test_the_request_bucket_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter({"requests": 6}, clock=lambda: now[0])  # one request back every 10 s
    for _ in range(6):
        limiter.take("k", "requests", 1)
    with pytest.raises(APIError) as refused:
        limiter.take("k", "requests", 1)
    assert refused.value.headers["Retry-After"] == "10"
    now[0] = 9.0
    with pytest.raises(APIError):
        limiter.take("k", "requests", 1)
    now[0] = 10.0
    limiter.take("k", "requests", 1)
    limiter.take("other", "requests", 1)  # another caller has its own bucket


@pytest.mark.parametrize("settings", [{"auth": "on", "rate_limit_requests_per_minute": 1}], indirect=True)
def test_rate_limits_are_per_api_key_from_the_settings(client, settings):
    with session_scope(settings.database_url) as session:
        keys = [create_api_key(session, project)[1] for project in ("alpha", "alpha", "beta")]
    first, second, other = ({"Authorization": f"Bearer {key}"} for key in keys)
    assert chat(client, headers=first).status_code == 200
    assert_rate_limited(chat(client, headers=first), "requests", 1)
    assert chat(client, headers=second).status_code == 200  # another key of the same project
    assert chat(client, headers=other).status_code == 200


def test_the_token_limit_counts_the_prompt_and_gives_back_the_unused_budget(client, tiny):
    text = tiny.reference(None, messages=MESSAGES, max_new_tokens=20).text
    stop = text[4:6]
    stopped = tiny.reference(None, messages=MESSAGES, max_new_tokens=20, stop=[stop])
    assert len(text) >= 6 and stopped.completion_tokens < 20  # the stop leaves part of the budget unused
    used = stopped.prompt_tokens + stopped.completion_tokens
    limit = used + 30
    limited(client, tokens=limit)
    assert chat(client, max_tokens=20, stop=[stop]).json()["usage"]["total_tokens"] == used
    assert_rate_limited(chat(client, max_tokens=31), "tokens", limit)  # 30 left: this budget is too much
    assert chat(client, max_tokens=30).status_code == 200  # the unused budget was given back
    assert_rate_limited(chat(client, max_tokens=1), "tokens", limit)  # that prompt overdrew the bucket


def test_answers_carry_openai_rate_limit_headers(client):
    limited(client, requests=5, tokens=1000)
    answer = chat(client, max_tokens=4)
    used = answer.json()["usage"]["total_tokens"]
    assert {key: answer.headers[key] for key in answer.headers if key.startswith("x-ratelimit-")} == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "12s",  # one request back every 12 s
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": str(1000 - used),  # reconciled before the answer is sent
        "x-ratelimit-reset-tokens": f"{-(-used * 60 // 1000)}s",
    }
    streamed = chat(client, stream=True)
    assert streamed.status_code == 200 and streamed.headers["x-ratelimit-remaining-requests"] == "3"


def test_a_request_larger_than_the_token_limit_says_so(client):
    limited(client, tokens=10)
    error = assert_rate_limited(chat(client, max_tokens=11), "tokens", 10)
    assert "more than your limit of 10 tokens per minute" in error["message"]


def test_rate_limits_are_off_by_default(client):
    assert RateLimiter.of(client.app.state.settings).limits == {}
    for _ in range(3):
        answer = chat(client)
        assert answer.status_code == 200
        assert not [key for key in answer.headers if key.startswith("x-ratelimit-")]
