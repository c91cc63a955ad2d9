"""Learning-rate schedules: linear warm-up, then linear or cosine decay to zero (LambdaLR)."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULERS = ("linear", "cosine")


def count_total_steps(num_examples: int, batch_size: int, n_epochs: int, max_steps: int | None) -> int:
    """Returns the number of optimizer steps a run takes.

    Each epoch has ``ceil(num_examples / batch_size)`` steps (the last batch may be smaller). ``max_steps``,
    when given, replaces the epoch count: the data is cycled through as many epochs as the steps need.
    """
    if max_steps is not None:
        return max_steps
    return n_epochs * math.ceil(num_examples / batch_size)


def effective_warmup(warmup_steps: int, total_steps: int) -> int:
    """Returns the warm-up length actually used.

    The configured value is kept whenever it is shorter than the run (the paper's default is 100). A run that
    is not longer than its warm-up would never reach the peak learning rate nor decay, so its warm-up is cut
    to a tenth of the run instead.
    """
    if warmup_steps < total_steps:
        return warmup_steps
    return total_steps // 10


def lr_multiplier(kind: str, warmup: int, total_steps: int) -> Callable[[int], float]:
    """Returns the LambdaLR factor of step ``s`` (0-based, the step about to be taken).

    Warm-up rises linearly from 0 at step 0 to 1 at step ``warmup`` (as in the Hugging Face schedules the
    paper's scripts use); then ``linear`` falls linearly and ``cosine`` along a half cosine, both to 0 at
    ``total_steps``.
    """
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {kind!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return factor


def build_scheduler(optimizer: Optimizer, kind: str, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Builds the warm-up + decay scheduler for ``total_steps`` optimizer steps.

    Args:
        optimizer: The optimizer whose learning rates are scaled.
        kind: ``"linear"`` or ``"cosine"`` decay after the warm-up.
        warmup_steps: Configured warm-up length (see ``effective_warmup``).
        total_steps: Optimizer steps in the whole run.

    Returns:
        A LambdaLR to step once after every optimizer step.
    """
    warmup = effective_warmup(warmup_steps, total_steps)
    return LambdaLR(optimizer, lr_multiplier(kind, warmup, total_steps))
