"""What each evaluation of a run measures, and which evaluation's adapter is the best.

Validation examples (tokenized) give the loss and token accuracy; held-out chat examples (an evaluation
file) give greedy answers scored by exact match and containment (``diablo_core.evaluation``), at most
``TRAINING_EVAL_EXAMPLES`` of them each time, the same ones every time so that the curve compares like with
like. A run with held-out examples keeps the adapter of its best exact match (ties: the lower validation
loss); a run with only validation examples, that of its lowest validation loss, when it stops early.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from diablo_core.data.tokenization import TokenizedExample
from diablo_core.evaluation.answers import evaluate_answers
from diablo_core.evaluation.examples import TRAINING_EVAL_EXAMPLES, EvalExample
from diablo_core.training.best import BestTracker
from diablo_core.training.distributed import evaluate_shard

if TYPE_CHECKING:
    from diablo_core.training.run_state import TrainingRun


@dataclass(frozen=True)
class RunEvaluation:
    """A run's held-out data: validation examples, evaluation examples (either may be None) and the tokenizer
    that renders the evaluation prompts."""

    valid: list[TokenizedExample] | None
    answers: list[EvalExample] | None
    tokenizer: Any

    @property
    def active(self) -> bool:
        """Whether there is anything to evaluate on."""
        return bool(self.valid) or bool(self.answers)

    def measure(self, run: TrainingRun) -> dict[str, float]:
        """``loss``, ``accuracy``, ``tokens`` (with validation examples) and ``exact_match``, ``contains``
        (with evaluation examples)."""
        metrics = self._validation(run) if self.valid else {}
        if self.answers:
            result = evaluate_answers(
                run.model,
                self.tokenizer,
                self.answers,
                max_examples=TRAINING_EVAL_EXAMPLES,
                precision=run.precision,
            )
            metrics.update(result.metrics())
        return metrics

    def tracker(self, patience: int | None, history: list[dict[str, Any]]) -> BestTracker | None:
        """The run's best-adapter tracker: by exact match with evaluation examples, by validation loss with
        early stopping; None when neither applies."""
        if self.answers or (patience and self.valid):
            return BestTracker.from_history(patience, history, by_answers=bool(self.answers))
        return None

    def _validation(self, run: TrainingRun) -> dict[str, float]:
        assert self.valid is not None
        micro = run.config.micro_batch_size or run.config.batch_size
        if run.world is None:
            return run.objective.evaluate(
                run.model, self.valid, micro, run.pad_id, run.config.device, run.precision
            )
        return evaluate_shard(run.model, self.valid, micro, run.pad_id, run.world, run.precision)
