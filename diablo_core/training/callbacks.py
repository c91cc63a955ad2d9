"""How training reports progress: TrainingProgress records and the callback protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainingProgress:
    """One optimizer step's report.

    Attributes:
        step: Optimizer steps taken so far (1 after the first step).
        total_steps: Steps the run is planned for.
        epoch: Current epoch (0-based).
        loss: Mean response-token loss of this step's effective batch.
        learning_rate: Learning rate this step used.
        tokens_per_second: Non-padding tokens trained per second of step time in this call.
        eta_seconds: Estimated step time left (evaluations and checkpoints not included).
        trained_tokens: Non-padding tokens processed so far (including before a resume).
        accuracy: Greedy next-token accuracy on this step's response tokens.
        precision: The run's resolved precision (``"fp32"``, ``"bf16"`` or ``"fp16"``).
        metrics: The objective's further metrics of this step (DPO: ``reward_margin``, ``reward_accuracy``).
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    learning_rate: float
    tokens_per_second: float
    eta_seconds: float
    trained_tokens: int
    accuracy: float = 0.0
    precision: str = "fp32"
    metrics: dict[str, float] = field(default_factory=dict)


class TrainingCallback:
    """Base class with no-op hooks; ``train`` accepts any object with some of these methods."""

    def on_progress(self, progress: TrainingProgress) -> bool | None:
        """Called after every optimizer step; return True to stop the run."""
        return None

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Called after every evaluation with ``{"loss", "accuracy", "tokens"}`` (validation examples) and
        ``{"exact_match", "contains"}`` (evaluation examples' answers), whichever the run has."""

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        """Called after a checkpoint directory is complete."""


class CallbackList:
    """Dispatches each hook to every callback that defines it."""

    def __init__(self, callbacks: Sequence[Any]):
        self.callbacks = list(callbacks)

    def _each(self, name: str) -> list[Any]:
        return [getattr(cb, name) for cb in self.callbacks if callable(getattr(cb, name, None))]

    def on_progress(self, progress: TrainingProgress) -> bool:
        """Calls every ``on_progress``; True when any of them asks to stop."""
        answers = [hook(progress) for hook in self._each("on_progress")]
        return any(bool(answer) for answer in answers)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        for hook in self._each("on_eval"):
            hook(step, metrics)

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        for hook in self._each("on_checkpoint"):
            hook(step, path, metrics)
