"""What a training step optimises: the objective hook of ``train`` (supervised by default, DPO in ``dpo``).

An objective turns one effective batch into accumulated gradients and its ``StepStats``, and a list of
held-out examples into metrics. The loop, schedule, checkpoints and callbacks are the same for each.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from diablo_core.training.loss import StepStats, accumulate_gradients, evaluate_examples


class Objective(Protocol):
    """A loss over batches of examples of one kind (``TokenizedExample``, ``PreferencePair``, ...)."""

    def accumulate(
        self,
        model: nn.Module,
        batch: list[Any],
        micro_batch_size: int,
        pad_token_id: int,
        device: str,
        precision: str,
        scaler: torch.amp.GradScaler | None,
    ) -> StepStats:
        """Forward and backward over ``batch``; gradients of the batch's mean loss accumulate."""
        ...

    def evaluate(
        self,
        model: nn.Module,
        examples: list[Any],
        batch_size: int,
        pad_token_id: int,
        device: str,
        precision: str,
    ) -> dict[str, float]:
        """Metrics on held-out examples (no grad), at least ``loss``, ``accuracy`` and ``tokens``."""
        ...


class Supervised:
    """Mean cross-entropy over response tokens (``training.loss``): the default objective."""

    def accumulate(
        self,
        model: nn.Module,
        batch: list[Any],
        micro_batch_size: int,
        pad_token_id: int,
        device: str,
        precision: str,
        scaler: torch.amp.GradScaler | None,
    ) -> StepStats:
        return accumulate_gradients(model, batch, micro_batch_size, pad_token_id, device, precision, scaler)

    def evaluate(
        self,
        model: nn.Module,
        examples: list[Any],
        batch_size: int,
        pad_token_id: int,
        device: str,
        precision: str,
    ) -> dict[str, float]:
        return evaluate_examples(model, examples, batch_size, pad_token_id, device, precision)


SUPERVISED = Supervised()
