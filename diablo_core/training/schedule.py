"""Learning-rate schedules: linear warm-up, then linear or cosine decay to zero (LambdaLR).

The step rules (total steps, effective warm-up) live in ``diablo_core.spec.training``, torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from diablo_core.spec.training import SCHEDULERS, effective_warmup


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
