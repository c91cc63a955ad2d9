"""Warm-up + decay schedules and the step count of a run."""

from __future__ import annotations

import pytest
import torch

from diablo_core.spec.training import count_total_steps, effective_warmup
from diablo_core.training.schedule import build_scheduler, lr_multiplier


def test_total_steps_from_epochs_or_max_steps() -> None:
    assert count_total_steps(num_examples=10, batch_size=4, n_epochs=2, max_steps=None) == 6
    assert count_total_steps(num_examples=10, batch_size=4, n_epochs=2, max_steps=7) == 7


def test_warmup_is_kept_unless_the_run_is_not_longer() -> None:
    assert effective_warmup(100, 300) == 100
    assert effective_warmup(100, 100) == 10
    assert effective_warmup(100, 6) == 0


def test_linear_and_cosine_shapes() -> None:
    linear = lr_multiplier("linear", warmup=2, total_steps=6)
    assert [linear(s) for s in range(7)] == pytest.approx([0, 0.5, 1, 0.75, 0.5, 0.25, 0])
    cosine = lr_multiplier("cosine", warmup=2, total_steps=6)
    assert [cosine(s) for s in (2, 4, 6)] == pytest.approx([1, 0.5, 0])
    with pytest.raises(ValueError, match="scheduler"):
        lr_multiplier("constant", 0, 1)


def test_scheduler_drives_the_optimizer_lr() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = build_scheduler(optimizer, "linear", warmup_steps=1, total_steps=3)
    seen = []
    for _ in range(3):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.0, 1e-3, 5e-4])
