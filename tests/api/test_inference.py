"""``/v1/chat/completions`` and ``/v1/completions`` on a tiny local model with DiaBlo adapters.

Every answer is compared with ``generate`` on a copy of the model with the adapter merged (greedy).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from api.main import create_app
from diablo_core.generation.decoding import generate
from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from diablo_core.models.loading import cast_parameters
from registry.artifacts import add_checkpoint
from registry.db import session_scope
from registry.models import Job
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, assert_error, create_job, jsonl, upload
from tests.api.tiny_serving import TINY_MODEL, serving_settings, tiny_fixture  # noqa: F401 (fixtures by name)

PROMPT = "Tell me a story"
MESSAGES = [{"role": "user", "content": PROMPT}]


def chat(client: TestClient, model: str, max_tokens: int = 12, **body: Any):
    body = {"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0, **body}
    return client.post("/v1/chat/completions", json=body)


def chat_text(client: TestClient, model: str, max_tokens: int = 12) -> str:
    response = chat(client, model, max_tokens)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def sse_events(response: Any) -> list[str]:
    """The ``data:`` payloads of an event-stream body, checking its framing."""
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in response.text.split("\n\n") if block and not block.startswith(":")]
    assert all(block.startswith("data: ") and "\n" not in block for block in blocks), blocks
    return [block.removeprefix("data: ") for block in blocks]


def test_greedy_chat_with_and_without_adapters_equals_generate_on_a_merged_copy(client, settings, tiny):
    tiny.install(settings, "ft:tiny::a", "a")
    tiny.install(settings, "ft:tiny::b", "b")
    for model, key in [(TINY_MODEL, None), ("default", None), ("ft:tiny::a", "a"), ("ft:tiny::b", "b")]:
        response = chat(client, model)
        assert response.status_code == 200, response.text
        body = response.json()
        expected = tiny.reference(key, messages=MESSAGES, max_new_tokens=12)
        assert (body["object"], body["model"]) == ("chat.completion", model)
        assert body["id"].startswith("chatcmpl-")
        choice = body["choices"][0]
        assert choice["message"] == {"role": "assistant", "content": expected.text}
        assert choice["finish_reason"] == expected.finish_reason
        prompt, completion = expected.prompt_tokens, expected.completion_tokens
        assert body["usage"] == {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    assert chat_text(client, "ft:tiny::a") != chat_text(client, TINY_MODEL)


def test_text_completion_equals_generate_and_accepts_a_one_prompt_list(client, settings, tiny):
    tiny.install(settings, "ft:tiny::c", "c")
    expected = tiny.reference("c", prompt=PROMPT, max_new_tokens=10, stop=["zz"])
    for prompt in (PROMPT, [PROMPT]):
        body = {"model": "ft:tiny::c", "prompt": prompt, "max_tokens": 10, "temperature": 0, "stop": "zz"}
        response = client.post("/v1/completions", json=body)
        assert response.status_code == 200, response.text
        completion = response.json()
        assert completion["object"] == "text_completion" and completion["id"].startswith("cmpl-")
        assert completion["choices"] == [
            {"text": expected.text, "index": 0, "logprobs": None, "finish_reason": expected.finish_reason}
        ]
        assert completion["usage"]["completion_tokens"] == expected.completion_tokens


def test_chat_stream_equals_the_json_answer_and_ends_with_done(client, settings, tiny):
    tiny.install(settings, "ft:tiny::a", "a")
    whole = chat(client, "ft:tiny::a", max_tokens=20).json()
    streamed = chat(client, "ft:tiny::a", max_tokens=20, stream=True, stream_options={"include_usage": True})
    assert streamed.status_code == 200, streamed.text
    events = sse_events(streamed)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks[:-1])
    assert content == whole["choices"][0]["message"]["content"]
    final, usage = chunks[-2], chunks[-1]
    assert final["choices"][0] == {
        "index": 0,
        "delta": {},
        "finish_reason": whole["choices"][0]["finish_reason"],
        "logprobs": None,
    }
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-2])
    assert (usage["choices"], usage["usage"]) == ([], whole["usage"])


def test_text_stream_equals_the_json_answer(client, settings, tiny):
    body = {"model": TINY_MODEL, "prompt": PROMPT, "max_tokens": 15, "temperature": 0}
    whole = client.post("/v1/completions", json=body).json()
    events = sse_events(client.post("/v1/completions", json={**body, "stream": True}))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(chunk["object"] == "text_completion" for chunk in chunks)


def test_seeded_sampling_repeats(client, settings):
    answers = {chat_text_sampled(client, seed=7) for _ in range(2)}
    assert len(answers) == 1
    assert answers != {chat_text_sampled(client, seed=8)}


def chat_text_sampled(client: TestClient, seed: int) -> str:
    response = chat(client, TINY_MODEL, max_tokens=16, temperature=1.0, top_p=0.9, seed=seed)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_unknown_and_deleted_models_answer_404(client, settings, tiny):
    assert_error(chat(client, "ft:tiny::nope"), 404, "model_not_found", "model")
    tiny.install(settings, "ft:tiny::gone", "a")
    assert chat(client, "ft:tiny::gone").status_code == 200  # resident in the engine's cache now
    assert client.delete("/v1/models/ft:tiny::gone").json()["deleted"] is True
    assert_error(chat(client, "ft:tiny::gone"), 404, "model_not_found", "model")
    assert_error(chat(client, "ft:tiny::gone", stream=True), 404, "model_not_found", "model")


def test_replaced_adapter_serves_its_new_weights(client, settings, tiny):
    tiny.install(settings, "ft:tiny::x", "a")
    assert chat_text(client, "ft:tiny::x") == tiny.reference("a", messages=MESSAGES, max_new_tokens=12).text
    tiny.install(settings, "ft:tiny::x", "b")
    assert chat_text(client, "ft:tiny::x") == tiny.reference("b", messages=MESSAGES, max_new_tokens=12).text


def test_adapter_of_another_base_model_is_refused(client, settings, tiny):
    tiny.install(settings, "ft:other::a", "a", base_model="other-model")
    error = assert_error(chat(client, "ft:other::a"), 400, "adapter_base_mismatch", "model")
    assert "other-model" in error["message"] and TINY_MODEL in error["message"]
    tiny.install(settings, "ft:tiny::foreign", "foreign")  # the row says tiny; the weights say otherwise
    error = assert_error(chat(client, "ft:tiny::foreign"), 400, "adapter_base_mismatch", "model")
    assert "elsewhere" in error["message"]


def test_a_base_model_that_is_not_served_is_refused(client, settings, tiny):
    (settings.data_dir / "models" / "tiny2").symlink_to(tiny.model_dir, target_is_directory=True)
    error = assert_error(chat(client, "tiny2"), 400, "model_not_served", "model")
    assert TINY_MODEL in error["message"]


def test_corrupted_adapter_is_refused_with_a_clear_error(client, settings, tiny):
    target = tiny.install(settings, "ft:tiny::bad", "a")
    data = bytearray((target / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (target / WEIGHTS_FILE).write_bytes(bytes(data))
    for stream in (False, True):
        error = assert_error(chat(client, "ft:tiny::bad", stream=stream), 500, "adapter_corrupted")
        assert "sha256" in error["message"] and "ft:tiny::bad" in error["message"]
    assert chat(client, TINY_MODEL).status_code == 200


def _add_checkpoint(settings: Settings, name: str, step: int, path: str, sha256: str | None = None) -> None:
    """Record checkpoint ``name`` of a new job, its adapter at ``path``."""
    with session_scope(settings.database_url) as session:
        job = Job(model=TINY_MODEL, training_file="file-x")
        session.add(job)
        session.flush()
        add_checkpoint(session, job.id, step, name, storage_path=path, sha256=sha256)


def test_checkpoint_names_are_servable(client, settings, tiny):
    name = "ft:tiny::job:ckpt-step-5"
    _add_checkpoint(settings, name, 5, str(tiny.adapters["b"]))
    assert chat_text(client, name) == tiny.reference("b", messages=MESSAGES, max_new_tokens=12).text


def test_a_checkpoint_is_checked_against_the_sha256_recorded_when_it_was_written(client, settings, tiny):
    name = "ft:tiny::job:ckpt-step-6"
    _add_checkpoint(settings, name, 6, str(tiny.adapters["b"]), sha256="0" * 64)
    assert_error(chat(client, name), 500, "adapter_corrupted")


def test_concurrent_requests_for_different_adapters_get_their_solo_answers(client, settings, tiny):
    keys = [None, "a", "b", "c", "d"]
    for key in keys[1:]:
        tiny.install(settings, f"ft:tiny::{key}", key)
    plan = [(keys[index % 5], PROMPT[: 4 + index % 7], 6 + index % 5) for index in range(16)]

    def ask(item: tuple[str | None, str, int]) -> str:
        key, content, max_tokens = item
        model = TINY_MODEL if key is None else f"ft:tiny::{key}"
        messages = [{"role": "user", "content": content}]
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, plan))
    assert client.app.state.inference.engine.stats.peak_batch_size > 1  # requests did share batches
    for (key, content, max_tokens), answer in zip(plan, answers, strict=True):
        messages = [{"role": "user", "content": content}]
        assert answer == tiny.reference(key, messages=messages, max_new_tokens=max_tokens).text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 65}, "max_tokens"),
        ({"max_completion_tokens": 100, "max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logprobs": True}, "logprobs"),
        ({"messages": []}, "messages"),
    ],
)
def test_invalid_requests_name_the_parameter(client, body, param):
    error = assert_error(chat(client, TINY_MODEL, **body), 400, "invalid_value", param)
    assert error["type"] == "invalid_request_error"


def test_an_empty_prompt_is_refused(client):
    body = {"model": TINY_MODEL, "prompt": "", "max_tokens": 4}
    error = assert_error(client.post("/v1/completions", json=body), 400, "invalid_value", "prompt")
    assert "empty" in error["message"]


def test_control_plane_routes_never_load_a_model(client):
    assert upload(client, jsonl([CHAT_EXAMPLE])).status_code == 200
    assert create_job(client).status_code == 200
    assert client.get("/v1/models").status_code == 200
    assert client.get(f"/v1/models/{TINY_MODEL}").status_code == 200
    assert_error(chat(client, "ft:tiny::missing"), 404, "model_not_found", "model")
    assert getattr(client.app.state, "inference", None) is None
    assert chat(client, TINY_MODEL).status_code == 200
    assert client.app.state.inference.model_id == TINY_MODEL


@pytest.mark.parametrize("settings", [{"inference_enabled": False}], indirect=True)
def test_a_control_plane_only_api_refuses_inference(client):
    assert_error(chat(client, TINY_MODEL), 503, "inference_disabled")
    assert getattr(client.app.state, "inference", None) is None


@pytest.mark.parametrize("settings", [{"preload_model": True}], indirect=True)
def test_preloaded_engine_starts_with_the_app_and_closes_with_it(settings):
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.inference.engine
        assert chat(client, TINY_MODEL).status_code == 200
    assert getattr(client.app.state, "inference", None) is None
    assert not engine._thread.is_alive()


@pytest.mark.parametrize("settings", [{"merged_adapter": "ft:tiny::m"}], indirect=True)
def test_merged_mode_serves_its_adapter_only(client, settings, tiny):
    tiny.install(settings, "ft:tiny::m", "d")
    assert chat_text(client, "ft:tiny::m") == tiny.reference("d", messages=MESSAGES, max_new_tokens=12).text
    assert client.app.state.inference.engine.merged_adapter is not None
    assert_error(chat(client, TINY_MODEL), 400, "adapter_not_served", "model")


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """DIABLO_TORCH_THREADS sets the process's torch threads: put them back for the next tests."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("settings", [{"inference_dtype": "bf16", "torch_threads": 1}], indirect=True)
def test_bf16_serving_holds_weights_and_adapters_in_bf16(restore_threads, client, settings, tiny):
    tiny.install(settings, "ft:tiny::b", "d")
    answer = chat_text(client, "ft:tiny::b")
    engine = client.app.state.inference.engine
    model = engine.adapters.model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32  # rotary angles stay exact
    stacks = [stack for m in model.modules() for stack in getattr(m, "stacks", {}).values()]
    assert stacks and all(stack.dtype == torch.bfloat16 for stack in stacks)  # adapters in the same dtype
    assert engine.torch_threads == 1  # as the engine thread reports it
    bf16_base = cast_parameters(copy.deepcopy(tiny.base.model), torch.bfloat16)
    expected = generate(bf16_base, tiny.base.tokenizer, messages=MESSAGES, max_new_tokens=12).text
    assert chat_text(client, TINY_MODEL) == expected
    assert answer  # the adapter's answer decodes in bf16 too


def test_inference_dtype_and_threads_settings_are_checked(settings):
    assert Settings(inference_dtype="BF16").inference_dtype == "bf16"
    with pytest.raises(ValueError, match=r"inference_dtype must be one of \['auto', 'fp32', 'bf16'\]"):
        Settings(inference_dtype="fp16")
    with pytest.raises(ValueError, match="torch_threads"):
        Settings(torch_threads=-1)
