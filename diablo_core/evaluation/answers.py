"""``evaluate_answers``: a model's greedy answers to held-out prompts, scored against their references.

Prompts are decoded in batches (``generation.batched``), each answer bounded to its reference's length plus
a margin (``examples.answer_budget``). The model is put in eval mode for the answers (no dropout) and back
in the mode it was in.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from diablo_core.evaluation.examples import EvalExample, EvalResult, answer_budget, score_answer, summarize
from diablo_core.generation.batched import greedy_batch
from diablo_core.generation.decoding import build_prompt_ids
from diablo_core.training.mixed_precision import autocast_for

DEFAULT_BATCH_SIZE = 8


def evaluate_answers(
    model: nn.Module,
    tokenizer: Any,
    examples: list[EvalExample],
    *,
    max_examples: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    precision: str = "fp32",
) -> EvalResult:
    """Answer the first ``max_examples`` of ``examples`` greedily and score exact match and containment.

    Args:
        model: A causal LM (base, DiaBlo or LoRA), on its device.
        tokenizer: Its tokenizer (chat template for the prompts).
        examples: Held-out examples (``examples.read_eval_examples``).
        max_examples: Answer at most this many (None: all).
        batch_size: Prompts decoded together.
        precision: The autocast precision of the forward passes (a training run's resolved precision).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    chosen = examples if max_examples is None else examples[:max_examples]
    device = str(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    samples = []
    try:
        with autocast_for(precision, device):
            for start in range(0, len(chosen), batch_size):
                batch = chosen[start : start + batch_size]
                answers = greedy_batch(model, tokenizer, *_prompts_and_budgets(tokenizer, batch))
                samples += [
                    score_answer(a.text, e.reference, e.line) for a, e in zip(answers, batch, strict=True)
                ]
    finally:
        model.train(was_training)
    return summarize(samples)


def _prompts_and_budgets(tokenizer: Any, batch: list[EvalExample]) -> tuple[list[list[int]], list[int]]:
    prompts = [build_prompt_ids(tokenizer, messages=example.messages) for example in batch]
    budgets = [
        answer_budget(len(tokenizer(example.reference, add_special_tokens=False)["input_ids"]))
        for example in batch
    ]
    return prompts, budgets
