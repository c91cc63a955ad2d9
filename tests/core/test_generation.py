import pytest
import torch

from diablo_core.generation.decoding import (
    GenerationResult,
    _safe_delta,
    build_prompt_ids,
    generate,
    pick_token,
    seed_in_range,
    stream_generate,
)
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_tiny_model(len(tokenizer))


def reference_greedy(model, tokenizer, prompt_ids: list[int], steps: int) -> list[int]:
    """Greedy decoding by full forward passes without a cache."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids) :]


def collect(stream) -> tuple[list[str], GenerationResult]:
    *deltas, result = list(stream)
    assert all(isinstance(delta, str) and delta for delta in deltas)
    assert isinstance(result, GenerationResult)
    return deltas, result


def test_build_prompt_ids_uses_generation_prompt(tokenizer):
    ids = build_prompt_ids(tokenizer, messages=MESSAGES)

    assert tokenizer.decode(ids).endswith("What is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert (
        build_prompt_ids(tokenizer, prompt="abc") == tokenizer("abc", add_special_tokens=False)["input_ids"]
    )
    with pytest.raises(ValueError, match="exactly one"):
        build_prompt_ids(tokenizer, messages=MESSAGES, prompt="abc")


def test_greedy_matches_uncached_decoding_and_is_deterministic(model, tokenizer):
    prompt_ids = build_prompt_ids(tokenizer, messages=MESSAGES)
    expected = reference_greedy(model, tokenizer, prompt_ids, 12)
    assert tokenizer.eos_token_id not in expected  # the check below needs a run that ends by length

    first = generate(model, tokenizer, messages=MESSAGES, max_new_tokens=12)
    second = generate(model, tokenizer, messages=MESSAGES, max_new_tokens=12)

    assert first == second
    assert first.text == tokenizer.decode(expected, skip_special_tokens=True)
    assert (first.prompt_tokens, first.completion_tokens, first.finish_reason) == (
        len(prompt_ids),
        12,
        "length",
    )


def test_sampling_is_repeatable_by_seed(model, tokenizer):
    def sample(seed):
        return generate(model, tokenizer, prompt="Once", max_new_tokens=16, temperature=1.0, seed=seed).text

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)


def test_tiny_top_p_keeps_only_the_most_likely_token(model, tokenizer):
    greedy = generate(model, tokenizer, prompt="Once", max_new_tokens=10)
    nucleus = generate(
        model, tokenizer, prompt="Once", max_new_tokens=10, temperature=0.8, top_p=1e-6, seed=5
    )

    assert nucleus.text == greedy.text


def test_stop_sequence_cuts_the_text(model, tokenizer):
    full = generate(model, tokenizer, prompt="Once", max_new_tokens=40).text
    start = next(i for i in range(4, len(full) - 2) if "\ufffd" not in full[i : i + 2])
    stop = full[start : start + 2]

    result = generate(model, tokenizer, prompt="Once", max_new_tokens=40, stop=["never seen", stop])

    assert result.text == full[: full.find(stop)]
    assert result.finish_reason == "stop"
    assert result.completion_tokens < 40
    deltas, streamed = collect(
        stream_generate(model, tokenizer, prompt="Once", max_new_tokens=40, stop=[stop])
    )
    assert "".join(deltas) == streamed.text == result.text


def test_eos_ends_generation_with_stop(model, tokenizer):
    first_token = reference_greedy(model, tokenizer, build_prompt_ids(tokenizer, prompt="Once"), 1)[0]
    model.generation_config.eos_token_id = first_token
    try:
        result = generate(model, tokenizer, prompt="Once", max_new_tokens=10)
    finally:
        model.generation_config.eos_token_id = tokenizer.eos_token_id

    assert (result.text, result.completion_tokens, result.finish_reason) == ("", 1, "stop")


@pytest.mark.parametrize(
    "options",
    [
        {"max_new_tokens": 30},
        {"max_new_tokens": 30, "temperature": 1.0, "seed": 3},
        {"max_new_tokens": 30, "stop": ["e"]},
    ],
)
def test_streamed_deltas_join_to_the_generated_text(model, tokenizer, options):
    deltas, result = collect(stream_generate(model, tokenizer, messages=MESSAGES, **options))

    assert "".join(deltas) == result.text
    assert result == generate(model, tokenizer, messages=MESSAGES, **options)


def test_stream_holds_back_partial_characters_and_stop_prefixes():
    assert _safe_delta("ab\ufffd", "", []) == "ab"
    assert _safe_delta("abc<|e", "a", ["<|end|>"]) == "bc"
    assert _safe_delta("abc<", "abc", ["<|end|>", "xyz"]) == ""
    assert _safe_delta("abc", "abc", ["<|end|>"]) == ""


def test_zero_new_tokens_and_invalid_settings(model, tokenizer):
    assert generate(model, tokenizer, prompt="Once", max_new_tokens=0) == GenerationResult(
        "", len(build_prompt_ids(tokenizer, prompt="Once")), 0, "length"
    )
    with pytest.raises(ValueError, match="top_p=0"):
        generate(model, tokenizer, prompt="Once", top_p=0.0)
    with pytest.raises(ValueError, match="temperature=-1"):
        generate(model, tokenizer, prompt="Once", temperature=-1.0)


EXTREME_SETTINGS = [
    {"temperature": 1e-40},
    {"temperature": 5e-324},
    {"temperature": 1.0, "top_p": 1e-300},
    {"temperature": 0.7, "top_p": 5e-324},
    {"temperature": 1e-40, "top_p": 1e-300, "seed": 2**64},
]


@pytest.mark.parametrize("options", EXTREME_SETTINGS)
def test_numerically_greedy_settings_give_the_greedy_text(model, tokenizer, options):
    greedy = generate(model, tokenizer, prompt="Once", max_new_tokens=12)

    assert generate(model, tokenizer, prompt="Once", max_new_tokens=12, **options) == greedy


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63), 2**64, 2**64 + 7, -(2**70)])
def test_any_integer_seed_samples_repeatably(model, tokenizer, seed):
    def sample(seed):
        return generate(model, tokenizer, prompt="Once", max_new_tokens=8, temperature=1.0, seed=seed).text

    assert sample(seed) == sample(seed)
    assert sample(seed) == sample(seed_in_range(seed))  # the mapping is the generator's own seed


def test_seeds_map_into_the_generator_range_deterministically():
    assert [seed_in_range(seed) for seed in (0, 2**64, -1, 2**64 - 1)] == [0, 0, 2**64 - 1, 2**64 - 1]
    for seed in (2**63 - 1, -(2**63), 2**64, 2**100):
        assert 0 <= seed_in_range(seed) < 2**64
        torch.Generator().manual_seed(seed_in_range(seed))  # accepted, no overflow


@pytest.mark.parametrize("scale", [1.0, 1e4, 3e38])
def test_pick_never_fails_or_returns_an_impossible_token(scale):
    logits = torch.randn(300, generator=torch.Generator().manual_seed(0)).clamp(-0.9, 0.9) * scale  # (V,)
    logits[17] = scale  # the unique most likely token
    generator = torch.Generator().manual_seed(1)
    for temperature in (1e-40, 5e-324, 1e-3, 1.0, 2.0, 1e300):
        for top_p in (5e-324, 1e-300, 0.5, 1.0):
            token = pick_token(logits, temperature, top_p, generator)
            assert 0 <= token < 300
            if (top_p < 1e-200 and temperature <= 2) or temperature < 1e-30:
                # top_p keeps the most likely token (at 1e300 every token ties); a tiny temperature is greedy
                assert token == 17


def test_pick_ignores_nan_and_handles_infinite_logits():
    logits = torch.tensor([float("nan"), 1.0, float("inf"), float("-inf")])  # (V,)
    generator = torch.Generator().manual_seed(0)

    assert {pick_token(logits, 1.0, 1.0, generator) for _ in range(20)} == {2}
    assert pick_token(torch.full((4,), float("-inf")), 1.0, 0.9, generator) in range(4)


def test_non_finite_temperature_is_refused(model, tokenizer):
    for temperature in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature="):
            generate(model, tokenizer, prompt="Once", temperature=temperature)
