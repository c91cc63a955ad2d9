"""One row's failure ends that row alone; bad-sized requests and floods are refused at submit."""

from __future__ import annotations

import pytest

from diablo_core.generation.decoding import generate
from diablo_core.serving import (
    ContextLengthError,
    EngineBusyError,
    GenerationRequest,
    InferenceEngine,
    RequestHandle,
)
from diablo_core.serving import batch as batch_module

GOOD = GenerationRequest(prompt="Tell me a story", max_tokens=12)


class Poisoned(RuntimeError):
    pass


@pytest.fixture
def engine(shared_model, tokenizer, identity):
    with InferenceEngine(shared_model, tokenizer, identity=identity, batch_window_s=0.2) as engine:
        yield engine


def _both(engine: InferenceEngine, poison: GenerationRequest):
    """Submits the good and the poisoned request together (one batch); the good one's result."""
    good, bad = engine.submit(GOOD), engine.submit(poison)
    with pytest.raises(Poisoned):
        bad.result(timeout=60)
    return good.result(timeout=60)


def test_a_failing_sampler_ends_its_row_only(engine, base_model, tokenizer, monkeypatch):
    pick = batch_module.pick_token

    def poisoned_pick(logits, temperature, top_p, generator):
        if temperature == 0.5:
            raise Poisoned("this row's sampling failed")
        return pick(logits, temperature, top_p, generator)

    monkeypatch.setattr(batch_module, "pick_token", poisoned_pick)
    alone = generate(base_model, tokenizer, prompt=GOOD.prompt, max_new_tokens=12)
    assert _both(engine, GenerationRequest(prompt="Hi", temperature=0.5, seed=1)) == alone
    assert engine.stats.peak_batch_size == 2


def test_a_failing_handle_callback_ends_its_row_only(engine, base_model, tokenizer, monkeypatch):
    push = RequestHandle.push

    def poisoned_push(self, delta):
        if self.request.prompt == "poison":
            raise Poisoned("this client's stream broke")
        push(self, delta)

    monkeypatch.setattr(RequestHandle, "push", poisoned_push)
    alone = generate(base_model, tokenizer, prompt=GOOD.prompt, max_new_tokens=12)
    assert _both(engine, GenerationRequest(prompt="poison", max_tokens=20)) == alone


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_a_row_that_breaks_the_shared_forward_ends_alone(engine, base_model, tokenizer, phase):
    poison_token = tokenizer("~", add_special_tokens=False)["input_ids"][0]

    def hook(module, args):  # the batched forward fails because of one row (its data or adapter)
        (ids,) = args  # (B, T)
        if phase == "prefill" and ids.shape[1] > 1 and (ids == poison_token).any():
            raise Poisoned("a prompt broke the batched prefill")
        if phase == "decode" and ids.shape == (2, 1):
            raise Poisoned("the batched decode forward failed")

    alone = generate(base_model, tokenizer, prompt=GOOD.prompt, max_new_tokens=12)
    hook_handle = engine.adapters.model.get_input_embeddings().register_forward_pre_hook(hook)
    try:
        good, bad = engine.submit(GOOD), engine.submit(GenerationRequest(prompt="~~~", max_tokens=30))
        assert good.result(timeout=60) == alone
        if phase == "prefill":
            with pytest.raises(Poisoned):
                bad.result(timeout=60)
        else:  # alone, each row's forward works: both rows go on, retried one by one
            assert bad.result(timeout=60).completion_tokens == 30
            assert engine.stats.isolation_retries >= 11
    finally:
        hook_handle.remove()


def test_prompt_plus_max_tokens_beyond_the_context_is_refused(shared_model, tokenizer, identity):
    with InferenceEngine(shared_model, tokenizer, identity=identity) as engine:
        assert engine.context_length == 512  # the tiny model's max_position_embeddings
        with pytest.raises(ContextLengthError) as caught:
            engine.submit(GenerationRequest(prompt="abc", max_tokens=510))
        engine.generate(GenerationRequest(prompt="abc", max_tokens=509), timeout=60)
    error = caught.value
    assert (error.code, error.prompt_tokens, error.max_tokens, error.context_length) == (
        "context_length_exceeded",
        3,
        510,
        512,
    )
    assert error.message == (
        "This model's maximum context length is 512 tokens. However, you requested 513 tokens "
        "(3 in the messages, 510 in the completion). Please reduce the length of the messages or completion."
    )


def test_context_length_takes_the_smaller_known_limit(shared_model, tokenizer, identity):
    tokenizer.model_max_length = 100
    try:
        with InferenceEngine(shared_model, tokenizer, identity=identity) as engine:
            assert engine.context_length == 100
    finally:
        tokenizer.model_max_length = int(1e30)  # transformers' "unknown"
    with InferenceEngine(shared_model, tokenizer, identity=identity, context_length=64) as engine:
        assert engine.context_length == 64
        with pytest.raises(ContextLengthError):
            engine.submit(GenerationRequest(prompt="abc", max_tokens=62))


def test_a_full_queue_refuses_with_a_retry_estimate(shared_model, tokenizer, identity):
    engine = InferenceEngine(
        shared_model, tokenizer, identity=identity, max_batch_size=1, max_waiting=3, max_waiting_per_tenant=2
    )
    with engine:
        running = engine.submit(GenerationRequest(prompt="Hi", max_tokens=500, tenant="a"))
        next(iter(running))  # it holds the only row; what follows waits
        waiting = [engine.submit(GenerationRequest(prompt="Hi", tenant="a")) for _ in range(2)]
        with pytest.raises(EngineBusyError) as own_cap:
            engine.submit(GenerationRequest(prompt="Hi", tenant="a"))
        waiting.append(engine.submit(GenerationRequest(prompt="Hi", tenant="b")))
        with pytest.raises(EngineBusyError) as full:
            engine.submit(GenerationRequest(prompt="Hi", tenant="c"))
        for handle in [running, *waiting]:
            handle.cancel()
        assert [handle.result(timeout=60).finish_reason for handle in waiting] == ["cancelled"] * 3
    assert (own_cap.value.code, full.value.code) == ("tenant_queue_full", "engine_overloaded")
    assert own_cap.value.retry_after_s >= 1.0 and full.value.retry_after_s >= 1.0
    assert engine.stats.cancelled == 4


def test_turnover_estimate_scales_with_the_queue_ahead():
    from diablo_core.serving.admission import TurnoverClock

    clock = TurnoverClock()
    assert clock.retry_after(100) == 1.0  # nothing known yet: the floor
    for second in range(11):
        clock.record(float(second), 2)  # 2 rows leave every second
    assert clock.retry_after(40) == pytest.approx(2 * clock.retry_after(20))
    assert clock.retry_after(1) == 1.0


def test_sampling_extremes_in_a_shared_batch_fail_nobody(engine, base_model, tokenizer):
    alone = generate(base_model, tokenizer, prompt=GOOD.prompt, max_new_tokens=12)
    odd = [
        GenerationRequest(prompt="Hi", temperature=1e-40, seed=2**64),
        GenerationRequest(prompt="Hi", temperature=1.0, top_p=1e-300, seed=-(2**63)),
        GenerationRequest(prompt="Hi", temperature=2.0, seed=2**63 - 1),
    ]
    handles = [engine.submit(GOOD)] + [engine.submit(request) for request in odd]
    results = [handle.result(timeout=60) for handle in handles]
    assert results[0] == alone
    greedy_hi = generate(base_model, tokenizer, prompt="Hi", max_new_tokens=128)
    assert results[1] == results[2] == greedy_hi
    assert results[3].completion_tokens > 0
