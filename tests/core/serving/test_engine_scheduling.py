"""Fair admission across tenants, chunked prefill between decode steps, cheap stop strings."""

from __future__ import annotations

import pytest

from diablo_core.generation.decoding import generate
from diablo_core.generation.stop_strings import StopMatcher
from diablo_core.serving import GenerationRequest, InferenceEngine

LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 6  # 270 byte tokens


def test_a_second_tenant_is_admitted_at_the_first_row_turnover(shared_model, tokenizer, identity):
    engine = InferenceEngine(shared_model, tokenizer, identity=identity, max_batch_size=2, batch_window_s=0.2)
    with engine:  # a's rows end one at a time (4 and 5 tokens), so each turnover frees one row
        flood = [
            engine.submit(GenerationRequest(prompt="Hi", max_tokens=4 + i % 2, tenant="a")) for i in range(30)
        ]
        next(iter(flood[0]))  # a's first two rows are decoding, 28 wait
        other = engine.submit(GenerationRequest(prompt="Hi", max_tokens=6, tenant="b"))
        # a's requests already started when b arrived (2 unless a loaded host let turnovers pass meanwhile)
        arrived = sum(handle.admission_index is not None for handle in flood)
        for handle in [*flood, other]:
            handle.result(timeout=120)
    before = [handle for handle in flood if handle.admission_index < other.admission_index]
    # b starts at the next turnover after it arrived (at most one more admission round of a's two rows);
    # first come, first served would admit all 30 of a first.
    assert len(before) <= arrived + 2 < len(flood)


def test_a_tenant_row_cap_holds(shared_model, tokenizer, identity):
    engine = InferenceEngine(
        shared_model, tokenizer, identity=identity, batch_window_s=0.2, max_rows_per_tenant=1
    )
    with engine:
        handles = [engine.submit(GenerationRequest(prompt="Hi", max_tokens=4, tenant="a")) for _ in range(3)]
        handles.append(engine.submit(GenerationRequest(prompt="Hi", max_tokens=4, tenant="b")))
        results = [handle.result(timeout=60) for handle in handles]
    assert len({result.text for result in results}) == 1
    assert engine.stats.peak_batch_size == 2  # one row of a, one of b, although 4 were ready together


@pytest.mark.parametrize("adapter", [None, "a"])
def test_chunked_prefill_equals_whole_prefill_and_lets_decode_run(
    shared_model, tokenizer, identity, make_adapter, merged_copy, adapter
):
    ref = make_adapter(adapter) if adapter else None
    request = GenerationRequest(adapter=ref, prompt=LONG_PROMPT, max_tokens=10)
    alone = generate(merged_copy(ref), tokenizer, prompt=LONG_PROMPT, max_new_tokens=10)
    forwards: list[str] = []
    engine = InferenceEngine(shared_model, tokenizer, identity=identity, prefill_chunk_tokens=32)
    hook = engine.adapters.model.get_input_embeddings().register_forward_pre_hook(
        lambda module, args: forwards.append("D" if args[0].shape[1] == 1 else "P")
    )
    with engine:
        running = engine.submit(GenerationRequest(prompt="Hi", max_tokens=200))
        next(iter(running))  # decoding before the long prompt arrives
        result = engine.generate(request, timeout=60)
        running.cancel()
    hook.remove()
    assert result == alone
    chunks = forwards[forwards.index("P", 1) :]
    assert engine.stats.prefill_chunks >= 1 + 270 // 32
    assert "PP" not in "".join(chunks)  # a decode step of the running row between every two chunks


def test_stop_matching_work_does_not_grow_with_stop_length():
    text = "".join(chr(97 + (i * 7) % 26) for i in range(400))

    def work(stop_length: int) -> int:
        matcher = StopMatcher(["z" * stop_length, "q" * stop_length, "xy" * (stop_length // 2), "ab" * 4])
        for end in range(1, len(text) + 1):  # one character per step, as decoding gives
            assert matcher.update(text[:end]) is None
        return matcher.work

    assert work(1_000_000) <= 2 * work(100)  # a rescan of the tail would cost min(stop, text) per step


def test_stop_matcher_finds_stops_across_steps_and_holds_their_beginnings():
    matcher = StopMatcher(["<|end|>", "xyz"])
    assert matcher.update("abc<|e") is None
    assert matcher.safe_delta("abc<|e", "") == "abc"
    assert matcher.update("abc<|en") is None and matcher.held == 4
    assert matcher.update("abc<|end|> more") == 3
    fresh = StopMatcher(["aaa"])
    assert [fresh.update("a" * n) for n in range(1, 5)] == [None, None, 0, 0]
