"""Early stopping and the best adapter: which evaluation had the lowest validation loss, and when to stop.

A run with ``early_stopping_patience`` keeps the adapter of its best evaluation in
``<output_dir>/best-adapter`` (written through the run's fence, like the final adapter) with ``best.json``
naming its step and loss, and stops once that many evaluations in a row found no lower loss. The tracker is
rebuilt from the run's history, so a resumed run knows its best evaluation and how long ago it was.
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
    """The lowest validation loss seen, its step, and the evaluations since.

    Attributes:
        patience: Evaluations in a row without a lower loss after which the run stops.
        best_loss: Lowest validation loss so far (inf before the first evaluation).
        best_step: Step of that evaluation (None before the first).
        since_best: Evaluations since the best one.
    """

    patience: int
    best_loss: float = math.inf
    best_step: int | None = None
    since_best: int = 0

    @classmethod
    def from_history(cls, patience: int, history: Iterable[dict[str, Any]]) -> BestTracker:
        """A tracker that has seen every evaluation recorded in a run's ``history``."""
        tracker = cls(patience)
        for record in history:
            if "eval_loss" in record:
                tracker.observe(int(record["step"]), float(record["eval_loss"]))
        return tracker

    def observe(self, step: int, loss: float) -> bool:
        """Record an evaluation; True when its loss is the lowest so far."""
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.since_best = loss, step, 0
            return True
        self.since_best += 1
        return False

    @property
    def exhausted(self) -> bool:
        """No lower loss for ``patience`` evaluations: time to stop."""
        return self.since_best >= self.patience

    def note(self) -> dict[str, Any]:
        """What ``best.json`` records next to the best adapter."""
        return {"step": self.best_step, "eval_loss": self.best_loss}


def best_adapter_step(directory: Path) -> int | None:
    """The step recorded next to a best adapter (None when there is none)."""
    try:
        return int(json.loads((directory / BEST_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
