"""Text generation with a hand-written KV-cache decode loop that also streams text deltas.

One loop serves both :func:`generate` and :func:`stream_generate`: each step feeds the last token with the
cache, picks the next token (greedy at temperature 0, else seeded temperature/top-p sampling), and decodes the
whole completion so far. Streaming emits only the new suffix of that text, holding back a trailing partial
character and any tail that could still become a stop sequence.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from diablo_core.data.tokenization import render_messages
from diablo_core.generation.result import GenerationResult
from diablo_core.generation.stop_strings import StopMatcher

_FLOAT64_MAX = torch.finfo(torch.float64).max
_SEED_SPAN = 2**64  # torch generators take seeds in [0, 2**64)


__all__ = [
    "GenerationResult",
    "build_prompt_ids",
    "eos_token_ids",
    "generate",
    "pick_token",
    "sampling_generator",
    "seed_in_range",
    "stream_generate",
]


def build_prompt_ids(
    tokenizer: Any, messages: list[dict[str, Any]] | None = None, prompt: str | None = None
) -> list[int]:
    """Token ids of a chat (template with generation prompt) or of a plain prompt; exactly one is given."""
    if (messages is None) == (prompt is None):
        raise ValueError("give exactly one of messages and prompt")
    text = prompt if messages is None else render_messages(messages, tokenizer, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def stream_generate(
    model: Any,
    tokenizer: Any,
    *,
    messages: list[dict[str, Any]] | None = None,
    prompt: str | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    seed: int | None = None,
) -> Iterator[str | GenerationResult]:
    """Generate a completion, yielding text deltas and finally the :class:`GenerationResult`.

    Args:
        model: A causal LM (plain or with DiaBlo layers).
        tokenizer: Its tokenizer.
        messages: Chat messages, rendered with the chat template and the assistant generation prompt.
        prompt: A plain text prompt (instead of ``messages``).
        max_new_tokens: Most tokens to generate; reaching it ends with ``finish_reason="length"``.
        temperature: 0 picks the most likely token; above 0 samples from the tempered distribution.
        top_p: Nucleus sampling: sample only from the smallest set of tokens whose probability reaches it.
        stop: Strings that end the completion (the text is cut before the first one).
        seed: Seed of the sampling generator, for repeatable samples.

    Yields:
        Text deltas (their concatenation equals the final text), then the result.
    """
    if not 0 <= temperature < math.inf or not 0 < top_p <= 1 or max_new_tokens < 0:
        detail = f"temperature={temperature}, top_p={top_p}, max_new_tokens={max_new_tokens}"
        raise ValueError(f"invalid generation settings: {detail}")
    prompt_ids = build_prompt_ids(tokenizer, messages, prompt)
    stops = StopMatcher(stop)
    eos_ids = eos_token_ids(model, tokenizer)
    generator = sampling_generator(next(model.parameters()).device, seed, temperature)
    completion: list[int] = []
    emitted, text, finish_reason = "", "", "length"
    for token in _decode_tokens(model, prompt_ids, max_new_tokens, temperature, top_p, generator):
        completion.append(token)
        if token in eos_ids:
            finish_reason = "stop"
            break
        text = tokenizer.decode(completion, skip_special_tokens=True)
        cut = stops.update(text)
        if cut is not None:
            text, finish_reason = text[:cut], "stop"
            break
        delta = stops.safe_delta(text, emitted)
        if delta:
            emitted += delta
            yield delta
    if text.startswith(emitted) and len(text) > len(emitted):
        yield text[len(emitted) :]
    yield GenerationResult(text, len(prompt_ids), len(completion), finish_reason)


def generate(model: Any, tokenizer: Any, **settings: Any) -> GenerationResult:
    """Generate a completion: :func:`stream_generate` run to its end, returning only its final result.

    ``settings`` are :func:`stream_generate`'s keyword arguments (``messages`` or ``prompt``,
    ``max_new_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``) with the same defaults.
    """
    *_, result = stream_generate(model, tokenizer, **settings)
    return result


@torch.inference_mode()
def _decode_tokens(
    model: Any,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
) -> Iterator[int]:
    """Yield generated token ids one by one, reusing the KV cache between steps."""
    device = next(model.parameters()).device
    step_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    past = None
    for _ in range(max_new_tokens):
        output = model(input_ids=step_ids, past_key_values=past, use_cache=True)
        past = output.past_key_values
        logits = output.logits[0, -1].float()  # (V,)
        token = pick_token(logits, temperature, top_p, generator)
        yield token
        step_ids = torch.tensor([[token]], dtype=torch.long, device=device)  # (1, 1)


def pick_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """Greedy at temperature 0, else sample from the tempered, top-p-filtered distribution.

    Safe for any finite settings: the arithmetic runs in float64 on logits shifted so that the largest is 0,
    so a tiny temperature sends the others to -inf (never inf - inf = NaN) and a tiny top_p is not rounded
    to 0; when only the most likely token keeps any probability, this is the greedy pick.
    """
    if temperature == 0:
        return int(logits.argmax())
    # NaN logits never win; +inf ones are the largest finite value, so the shift below stays finite.
    logits = torch.nan_to_num(logits.double(), nan=-math.inf, posinf=_FLOAT64_MAX)  # (V,)
    best = logits.max()
    if not torch.isfinite(best):
        return int(logits.argmax())
    scaled = torch.nan_to_num((logits - best) / temperature, nan=-math.inf)  # (V,): <= 0, the best is 0
    probs = torch.softmax(scaled, dim=-1)  # (V,)
    if int((probs > 0).sum()) == 1:
        return int(probs.argmax())  # numerically greedy: no other token keeps any probability
    if top_p < 1:
        sorted_probs, order = probs.sort(descending=True)  # (V,), (V,)
        # Keep a token while the mass before it is below top_p; the most likely token always stays.
        outside = sorted_probs.cumsum(0) - sorted_probs >= top_p  # (V,)
        outside[0] = False
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def sampling_generator(device: torch.device, seed: int | None, temperature: float) -> torch.Generator | None:
    """The sampling generator of one completion, seeded with ``seed`` (random when None); None when greedy."""
    if not temperature > 0:
        return None
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed_in_range(seed))
    return generator


def seed_in_range(seed: int) -> int:
    """Maps any integer seed to the generator's range [0, 2**64) deterministically (distinct there)."""
    return int(seed) % _SEED_SPAN


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids from the tokenizer and the model's generation config."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(config_eos)
    return ids


def _safe_delta(text: str, emitted: str, stops: list[str]) -> str:
    """New text that can be shown: no partial trailing character, no tail that may begin a stop sequence."""
    matcher = StopMatcher(stops)
    matcher.update(text)
    return matcher.safe_delta(text, emitted)
