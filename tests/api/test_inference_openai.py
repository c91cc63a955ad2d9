"""Inference through the official ``openai`` client against a real uvicorn server on loopback."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from api.main import create_app
from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE, save_adapter
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.models.loading import load_base_model
from registry.artifacts import register_adapter
from registry.base_models import DEFAULT_MODEL_ID
from registry.db import session_scope
from registry.settings import Settings
from tests.api.conftest import make_settings, served
from tests.api.tiny_serving import TINY_MODEL, TinyServing, build_tiny_serving, link_tiny_model, sha256_of
from tests.core.tiny import randomize_blocks
from tests.process_helpers import converted_models_dir, link_models

pytestmark = pytest.mark.integration
MESSAGES = [{"role": "user", "content": "Say something"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyServing:
    return build_tiny_serving(tmp_path_factory.mktemp("tiny-serving"))


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, tiny: TinyServing) -> Settings:
    settings = make_settings(tmp_path / "data", sqlite_url, default_model=TINY_MODEL, device="cpu")
    link_tiny_model(settings, tiny)
    return settings


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread (lifespan included); yields its ``/v1`` URL."""
    with served(app) as url:
        yield f"{url}/v1"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def sdk(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=120) as client:
        yield client


def test_chat_streaming_and_models_through_the_sdk(sdk, settings, tiny):
    tiny.install(settings, "ft:tiny::sdk", "b")
    expected = tiny.reference("b", messages=MESSAGES, max_new_tokens=16)
    whole = sdk.chat.completions.create(model="ft:tiny::sdk", messages=MESSAGES, max_tokens=16, temperature=0)
    assert whole.choices[0].message.content == expected.text
    assert whole.choices[0].finish_reason == expected.finish_reason
    assert whole.usage.completion_tokens == expected.completion_tokens
    stream = sdk.chat.completions.create(
        model="ft:tiny::sdk",
        messages=MESSAGES,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert {model.id for model in sdk.models.list()} >= {TINY_MODEL, "ft:tiny::sdk"}


def test_text_completion_and_errors_through_the_sdk(sdk, tiny):
    expected = tiny.reference(None, prompt="Once", max_new_tokens=8)
    completion = sdk.completions.create(model=TINY_MODEL, prompt="Once", max_tokens=8, temperature=0)
    assert completion.choices[0].text == expected.text
    streamed = sdk.completions.create(
        model=TINY_MODEL, prompt="Once", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed) == expected.text
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="ft:tiny::none", messages=MESSAGES)
    assert (missing.value.code, missing.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.BadRequestError) as too_many:
        sdk.chat.completions.create(model=TINY_MODEL, messages=MESSAGES, max_tokens=10**6)
    assert too_many.value.param == "max_tokens"


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [TOOL]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"functions": [TOOL["function"]]}, "functions"),
        ({"logit_bias": {"42": 10}}, "logit_bias"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"n": 2}, "n"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_chat_fields_that_would_change_the_answer_are_refused(sdk, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model=TINY_MODEL, messages=MESSAGES, max_tokens=2, **fields)
    assert (refused.value.param, refused.value.type) == (param, "invalid_request_error")
    assert refused.value.code == "invalid_value"


@pytest.mark.parametrize(
    ("fields", "param"), [({"echo": True}, "echo"), ({"best_of": 2}, "best_of"), ({"suffix": "x"}, "suffix")]
)
def test_completion_fields_that_would_change_the_answer_are_refused(sdk, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.completions.create(model=TINY_MODEL, prompt="Once", max_tokens=2, **fields)
    assert (refused.value.param, refused.value.type) == (param, "invalid_request_error")


def test_neutral_values_of_unimplemented_fields_are_accepted(sdk, tiny):
    expected = tiny.reference(None, messages=MESSAGES, max_new_tokens=4)
    neutral = sdk.chat.completions.create(
        model=TINY_MODEL,
        messages=MESSAGES,
        max_tokens=4,
        temperature=0,
        response_format={"type": "text"},
        tool_choice="none",
        tools=[],
        logit_bias={},
        logprobs=False,
        n=1,
        user="someone",
    )
    assert neutral.choices[0].message.content == expected.text


def slow_down(engine: Any) -> None:
    """Every forward takes 10 ms or more, so 400 tokens take 4 s or more: a request outlives its client."""
    engine.adapters.model.register_forward_pre_hook(lambda *_: time.sleep(0.01))


def wait_for_no_rows(engine: Any) -> None:
    deadline = time.monotonic() + 30  # bounds a hang only: a cancelled row leaves at the next step
    while engine._batch.rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine._batch.rows


def test_a_client_that_disconnects_cancels_its_request(app, base_url):
    body = {"model": TINY_MODEL, "messages": MESSAGES, "max_tokens": 400, "temperature": 0}
    assert httpx.post(f"{base_url}/chat/completions", json={**body, "max_tokens": 1}).status_code == 200
    engine = app.state.inference.engine
    slow_down(engine)
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{base_url}/chat/completions", json=body | {"stream": True}) as r,
    ):
        assert r.status_code == 200
        assert next(r.iter_lines()).startswith("data: ")
    wait_for_no_rows(engine)
    assert engine.stats.cancelled == 1
    assert engine.stats.decode_tokens < 300


def test_a_client_that_gives_up_on_a_json_answer_frees_its_row(app, base_url):
    body = {"model": TINY_MODEL, "messages": MESSAGES, "max_tokens": 400, "temperature": 0}
    assert httpx.post(f"{base_url}/chat/completions", json={**body, "max_tokens": 1}).status_code == 200
    engine = app.state.inference.engine
    slow_down(engine)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}/chat/completions", json=body, timeout=1.0)
    wait_for_no_rows(engine)
    assert engine.stats.cancelled == 1
    assert engine.stats.decode_tokens < 300


@pytest.fixture(scope="module")
def real_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted_models_dir(tmp_path_factory)


@pytest.mark.slow
def test_an_adapter_of_the_real_default_model_serves_text(tmp_path, sqlite_url, real_models):
    data_dir = link_models(tmp_path / "data", real_models)
    settings = make_settings(data_dir, sqlite_url, device="cpu")
    base = load_base_model("default", data_dir=data_dir)
    adapted = copy.deepcopy(base.model)
    apply_diablo(adapted, DiaBloConfig(num_blocks=64))
    randomize_blocks(adapted, seed=3, scale=0.002)
    directory = save_adapter(adapted, settings.adapters_dir / "real", base_model=base.identity)
    app = create_app(settings)
    with serving(app) as url:  # the lifespan migrates the database before the adapter is registered
        with session_scope(settings.database_url) as session:
            size = (directory / WEIGHTS_FILE).stat().st_size
            register_adapter(
                session,
                name="ft:smol::real",
                job_id=None,
                base_model=DEFAULT_MODEL_ID,
                storage_path=str(directory),
                sha256=sha256_of(directory),
                size_bytes=size,
            )
        with openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0, timeout=300) as sdk:
            answer = sdk.chat.completions.create(
                model="ft:smol::real", messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=12
            )
    assert answer.choices[0].message.content.strip()
    assert answer.usage.prompt_tokens > 5 and 0 < answer.usage.completion_tokens <= 12


def test_an_engine_failure_mid_stream_reaches_the_client_as_an_error(app, sdk):
    sdk.chat.completions.create(model=TINY_MODEL, messages=MESSAGES, max_tokens=1)  # loads the engine
    slow_down(app.state.inference.engine)
    stream = sdk.chat.completions.create(
        model=TINY_MODEL, messages=MESSAGES, max_tokens=400, temperature=0, stream=True
    )
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    app.state.inference.engine.close()
    with pytest.raises(openai.APIError) as failed:
        for _ in chunks:
            pass
    assert "shutting down" in failed.value.message
    assert failed.value.body["code"] == "engine_closed"
