"""The "auto" rules that fit a job to its model and its data (torch-free).

- Learning rate: ``5e-4 · (64 / b)^0.7``, ``b`` the block input size ``ceil(hidden_size / num_blocks)``. The
  paper's 5e-4 is for LLaMA-2-7B at N=64 (b = 4096 / 64 = 64); smaller blocks carry less signal per
  block and take a larger rate: the default 135M model (576 / 64 = 9) gets about 2e-3, the rate the README's
  arithmetic example was tuned to by hand. Kept within ``[MIN_AUTO_LEARNING_RATE, MAX_AUTO_LEARNING_RATE]``.
- Validation hold-out: with no validation file, 5% of the training file (at least 16, at most 100 examples,
  and at most a quarter of the file); files too small for 8 held-out examples keep every example for training.
- Length: with early stopping, training may run for twice the epochs of the OpenAI rule (``auto_epochs``),
  evaluating about ten times per OpenAI-rule run, and stops after ``DEFAULT_PATIENCE`` evaluations without a
  better validation loss.
- Warm-up: a tenth of the planned run (for early stopping, of its bound), at most the paper's 100 steps: a
  400-example file's 144-step bound warms up for 14, the paper's long 7B runs for 100.
- Max length: the tokens of the longest example in the job's files (training and validation), which must fit
  the model's context (``max_position_embeddings``); an explicit ``max_length`` is the limit, and the model's
  context still bounds every example. Whoever holds the model's tokenizer counts: the API when the job is
  created, else the worker when it starts.
"""

from __future__ import annotations

import math

REFERENCE_LEARNING_RATE = 5e-4
REFERENCE_BLOCK_SIZE = 64
LEARNING_RATE_EXPONENT = 0.7
MIN_AUTO_LEARNING_RATE = 1e-5
MAX_AUTO_LEARNING_RATE = 1e-2
HOLDOUT_FRACTION = 0.05
MIN_HOLDOUT = 16
MAX_HOLDOUT = 100
SMALLEST_HOLDOUT = 8
DEFAULT_PATIENCE = 4
LENGTH_BOUND_FACTOR = 2
EVALUATIONS_PER_RUN = 10
PAPER_WARMUP_STEPS = 100
WARMUP_FRACTION = 0.1


def example_length_limit(max_length: int | str, context_length: int | None) -> int | None:
    """The most tokens one example of a job may have: ``max_length`` ("auto": no limit of its own), within the
    model's context (None: no limit known)."""
    if max_length == "auto":
        return context_length
    return int(max_length) if context_length is None else min(int(max_length), context_length)


def auto_max_length(longest_example: int, context_length: int | None) -> int:
    """What "auto" ``max_length`` resolves to: the longest example's tokens, within the model's context."""
    if longest_example < 1:
        raise ValueError(f"longest_example must be a positive token count, got {longest_example!r}")
    return longest_example if context_length is None else min(longest_example, context_length)


def block_input_size(hidden_size: int, num_blocks: int) -> int:
    """Input features per block of a ``hidden_size``-wide layer split into ``num_blocks`` blocks."""
    if hidden_size < 1 or num_blocks < 1:
        raise ValueError(f"hidden_size and num_blocks must be positive, got {hidden_size}, {num_blocks}")
    return math.ceil(hidden_size / num_blocks)


def auto_learning_rate(hidden_size: int, num_blocks: int) -> float:
    """The rate "auto" picks for a model of width ``hidden_size`` trained with ``num_blocks`` blocks."""
    ratio = REFERENCE_BLOCK_SIZE / block_input_size(hidden_size, num_blocks)
    rate = REFERENCE_LEARNING_RATE * ratio**LEARNING_RATE_EXPONENT
    return min(MAX_AUTO_LEARNING_RATE, max(MIN_AUTO_LEARNING_RATE, rate))


def holdout_size(num_examples: int) -> int:
    """Examples "auto" holds out of a training file of ``num_examples`` for validation (0: none)."""
    size = min(MAX_HOLDOUT, max(MIN_HOLDOUT, round(HOLDOUT_FRACTION * num_examples)), num_examples // 4)
    return size if size >= SMALLEST_HOLDOUT else 0


def auto_warmup(total_steps: int) -> int:
    """The warm-up "auto" picks for a run planned at ``total_steps`` optimizer steps."""
    return min(PAPER_WARMUP_STEPS, int(WARMUP_FRACTION * total_steps))


def auto_eval_every(steps: int) -> int:
    """Steps between evaluations for early stopping, about ``EVALUATIONS_PER_RUN`` per ``steps``."""
    return max(1, math.ceil(steps / EVALUATIONS_PER_RUN))
