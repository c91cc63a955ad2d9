"""Early stopping and the best adapter: which evaluation was the best, and when to stop.

An evaluation is better than another by its validation loss (lower), or, in a run that answers held-out
examples (an evaluation file), by its exact match (higher; an equal one with a lower validation loss). A run
with ``early_stopping_patience`` or with held-out examples keeps the adapter of its best evaluation in
``<output_dir>/best-adapter`` (written through the run's fence, like the final adapter) with ``best.json``
naming its step and scores; with a patience it stops once that many evaluations in a row found no better
one. The tracker is rebuilt from the run's history, so a resumed run knows its best evaluation and how long
ago it was.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEST_ADAPTER_DIR = "best-adapter"
BEST_FILE = "best.json"


@dataclass
class BestTracker:
    """The best evaluation seen, its step, and the evaluations since.

    Attributes:
        patience: Evaluations in a row without a better one after which the run stops (None: never).
        by_answers: Evaluations are ranked by exact match first (runs with held-out examples).
        best_loss: Validation loss of the best evaluation (inf before the first, or without validation).
        best_exact_match: Exact match of the best evaluation (None before the first, or not ``by_answers``).
        best_step: Step of that evaluation (None before the first).
        since_best: Evaluations since the best one.
    """

    patience: int | None
    by_answers: bool = False
    best_loss: float = math.inf
    best_exact_match: float | None = None
    best_step: int | None = None
    since_best: int = 0

    @classmethod
    def from_history(
        cls, patience: int | None, history: Iterable[dict[str, Any]], by_answers: bool = False
    ) -> BestTracker:
        """A tracker that has seen every evaluation recorded in a run's ``history``."""
        tracker = cls(patience, by_answers)
        for record in history:
            if "eval_loss" in record or "eval_exact_match" in record:
                tracker.observe(int(record["step"]), record.get("eval_loss"), record.get("eval_exact_match"))
        return tracker

    def observe(self, step: int, loss: float | None, exact_match: float | None = None) -> bool:
        """Record an evaluation; True when it is the best so far."""
        loss = math.inf if loss is None else float(loss)
        if self._better(loss, exact_match):
            self.best_loss, self.best_step, self.since_best = loss, step, 0
            self.best_exact_match = exact_match if self.by_answers else None
            return True
        self.since_best += 1
        return False

    def _better(self, loss: float, exact_match: float | None) -> bool:
        if not self.by_answers:
            return loss < self.best_loss
        score, best = exact_match or 0.0, self.best_exact_match
        return best is None or score > best or (score == best and loss < self.best_loss)

    @property
    def exhausted(self) -> bool:
        """No better evaluation for ``patience`` evaluations: time to stop."""
        return self.patience is not None and self.since_best >= self.patience

    @property
    def finite_loss(self) -> float | None:
        """The best evaluation's validation loss (None when it had none)."""
        return None if math.isinf(self.best_loss) else self.best_loss

    def note(self) -> dict[str, Any]:
        """What ``best.json`` records next to the best adapter."""
        return {
            "step": self.best_step,
            "eval_loss": self.finite_loss,
            "eval_exact_match": self.best_exact_match,
        }


def best_adapter_step(directory: Path) -> int | None:
    """The step recorded next to a best adapter (None when there is none)."""
    try:
        return int(json.loads((directory / BEST_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
