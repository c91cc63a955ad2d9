"""InferenceEngine: batched, multi-adapter generation equals single-request generation on merged copies."""

from __future__ import annotations

import asyncio
import threading

import pytest

from diablo_core.errors import AdapterError
from diablo_core.generation.decoding import generate
from diablo_core.serving import AdapterRef, EngineClosedError, GenerationRequest, InferenceEngine

PROMPTS = ["Hi", "Tell me a story about a tiny model", "abc", "The quick brown fox jumps over"]


@pytest.fixture
def engine(shared_model, tokenizer, identity):
    with InferenceEngine(
        shared_model, tokenizer, identity=identity, max_batch_size=8, max_adapters=4
    ) as engine:
        yield engine


def _alone(merged_copy, tokenizer, request: GenerationRequest):
    """What Helper B's single-request generate() gives with the adapter merged into a copy of the model."""
    return generate(
        merged_copy(request.adapter),
        tokenizer,
        messages=request.messages,
        prompt=request.prompt,
        max_new_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        seed=request.seed,
    )


def test_greedy_with_an_adapter_equals_the_adapter_merged_into_a_copy(
    engine, make_adapter, merged_copy, tokenizer
):
    for name in ("a", "b", "c"):
        request = GenerationRequest(adapter=make_adapter(name), prompt=PROMPTS[1], max_tokens=12)
        assert engine.generate(request, timeout=60) == _alone(merged_copy, tokenizer, request)
    base = GenerationRequest(prompt=PROMPTS[1], max_tokens=12)
    assert engine.generate(base, timeout=60).text != engine.generate(request, timeout=60).text


def test_mixed_batch_gives_each_request_what_it_gets_alone(
    shared_model, tokenizer, identity, make_adapter, merged_copy
):
    adapters = [None, make_adapter("a"), make_adapter("b"), make_adapter("c"), make_adapter("d")]
    requests = [
        GenerationRequest(adapter=ref, prompt=PROMPTS[index % 4], max_tokens=6 + 2 * index)
        for index, ref in enumerate(adapters)
    ]
    requests.append(
        GenerationRequest(adapter=adapters[1], messages=[{"role": "user", "content": "hey"}], max_tokens=16)
    )
    requests.append(GenerationRequest(adapter=adapters[2], prompt="x", temperature=0.9, top_p=0.8, seed=5))
    engine = InferenceEngine(shared_model, tokenizer, identity=identity, batch_window_s=0.2, max_adapters=4)
    with engine:
        for ref in adapters[1:]:
            engine.cache.load(ref)  # resident, so that every request joins the first prefill
            engine.cache.release(ref.sha256)
        handles = [engine.submit(request) for request in requests]
        results = [handle.result(timeout=60) for handle in handles]
    assert engine.stats.peak_batch_size == len(requests)
    for request, result in zip(requests, results, strict=True):
        assert result == _alone(merged_copy, tokenizer, request)


def test_requests_joining_a_running_batch_get_what_they_get_alone(
    engine, make_adapter, merged_copy, tokenizer
):
    long = GenerationRequest(adapter=make_adapter("a"), prompt=PROMPTS[3], max_tokens=40)
    first = engine.submit(long)
    next(iter(first))  # the long request is decoding before the others arrive
    late = [
        GenerationRequest(adapter=make_adapter(name), prompt=prompt, max_tokens=5)
        for name, prompt in (("b", "Hi"), ("d", PROMPTS[1]))
    ]
    late_results = [engine.submit(request).result(timeout=60) for request in late]
    assert first.result(timeout=60) == _alone(merged_copy, tokenizer, long)
    for request, result in zip(late, late_results, strict=True):
        assert result == _alone(merged_copy, tokenizer, request)


def test_concurrent_requests_for_different_adapters_never_see_each_others_weights(
    engine, make_adapter, merged_copy, tokenizer
):
    # 8 adapters through a cache of 4: slots are evicted and reused while other requests run.
    requests = [
        GenerationRequest(
            adapter=make_adapter("ab"[index % 2], seed=index), prompt=PROMPTS[index % 4], max_tokens=8
        )
        for index in range(8)
    ]
    results: dict[int, object] = {}

    def client(index: int) -> None:
        for _ in range(2):
            results[index] = engine.generate(requests[index], timeout=120)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, request in enumerate(requests):
        assert results[index] == _alone(merged_copy, tokenizer, request)
    assert len(engine.cache) <= 4


def test_streaming_and_non_streaming_agree(engine, make_adapter):
    request = GenerationRequest(adapter=make_adapter("a"), prompt=PROMPTS[1], max_tokens=20, stop=["e"])
    handle = engine.submit(request)
    deltas = list(handle)
    result = handle.result()
    assert "".join(deltas) == result.text == engine.generate(request).text
    assert len(deltas) > 1 or result.completion_tokens <= 1

    async def consume() -> tuple[str, object]:
        streamed = engine.submit(request)
        text = "".join([delta async for delta in streamed])
        return text, await streamed.aresult()

    text, async_result = asyncio.run(consume())
    assert text == async_result.text == result.text
    assert asyncio.run(engine.agenerate(request)) == result


def test_stops_lengths_usage_and_sampling_match_generate(engine, make_adapter, merged_copy, tokenizer):
    ref = make_adapter("d")
    base_text = engine.generate(GenerationRequest(adapter=ref, prompt="Hi", max_tokens=10)).text
    stop = next(char for char in base_text[1:] if char.isascii() and char.isprintable())
    requests = [
        GenerationRequest(adapter=ref, prompt="Hi", max_tokens=10, stop=["never", stop]),
        GenerationRequest(adapter=ref, prompt="Hi", max_tokens=1),
        GenerationRequest(adapter=ref, prompt="Hi", max_tokens=12, temperature=1.0, seed=3),
        GenerationRequest(adapter=None, prompt="Hi", max_tokens=12, temperature=0.7, top_p=0.5, seed=4),
    ]
    results = [handle.result(timeout=60) for handle in [engine.submit(request) for request in requests]]
    assert results[0].finish_reason == "stop" and results[0].text == base_text[: base_text.index(stop)]

    assert (results[1].finish_reason, results[1].completion_tokens) == ("length", 1)
    assert results[1].prompt_tokens == len(tokenizer("Hi")["input_ids"])
    for request, result in zip(requests, results, strict=True):
        assert result == _alone(merged_copy, tokenizer, request)
    assert engine.generate(GenerationRequest(prompt="Hi", max_tokens=0)).completion_tokens == 0


def test_merged_mode_serves_its_adapter_and_refuses_others(
    shared_model, tokenizer, identity, make_adapter, merged_copy
):
    ref = make_adapter("b")
    with InferenceEngine(shared_model, tokenizer, identity=identity, merged_adapter=ref) as engine:
        request = GenerationRequest(adapter=ref, prompt=PROMPTS[2], max_tokens=10)
        assert engine.generate(request, timeout=60) == _alone(merged_copy, tokenizer, request)
        assert not engine.adapters.layers  # nothing wrapped: the base forward, zero overhead
        for other in (make_adapter("a"), None):
            with pytest.raises(AdapterError) as caught:
                engine.submit(GenerationRequest(adapter=other, prompt="Hi"))
            assert caught.value.code == "adapter_not_served"


def test_a_bad_adapter_fails_its_request_only(engine, make_adapter, tmp_path):
    good = engine.submit(GenerationRequest(adapter=make_adapter("a"), prompt="Hi", max_tokens=4))
    bad = engine.submit(GenerationRequest(adapter=AdapterRef("0" * 64, make_adapter("a").path), prompt="Hi"))
    missing = engine.submit(GenerationRequest(adapter=AdapterRef("1" * 64, tmp_path), prompt="Hi"))
    with pytest.raises(AdapterError) as caught:
        bad.result(timeout=60)
    assert caught.value.code == "adapter_checksum_mismatch"
    with pytest.raises(AdapterError) as caught:
        list(missing)
    assert caught.value.code == "adapter_not_found"
    assert good.result(timeout=60).completion_tokens == 4


def test_cancel_and_close(shared_model, tokenizer, identity):
    engine = InferenceEngine(shared_model, tokenizer, identity=identity)
    handle = engine.submit(GenerationRequest(prompt="Hi", max_tokens=500))
    next(iter(handle))
    handle.cancel()
    assert handle.result(timeout=60).finish_reason == "cancelled"
    engine.close()
    with pytest.raises(EngineClosedError):
        engine.submit(GenerationRequest(prompt="Hi"))
