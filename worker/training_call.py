"""The one ``train`` call of a job, bound to its model, examples, config and output folder.

Shared by the single-process worker (``worker.training_job``) and each rank of a launched job
(``worker.rank_entry``); the caller adds where to resume from.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from diablo_core.data.tokenization import TokenizedExample
from diablo_core.models.loading import LoadedModel
from diablo_core.training.loop import TrainingResult, train
from registry.storage import job_dir
from worker.job_config import JobPlan

if TYPE_CHECKING:
    from collections.abc import Callable

    from worker.training_job import JobRun


def bound_train(
    run: JobRun,
    loaded: LoadedModel,
    plan: JobPlan,
    train_set: list[TokenizedExample],
    valid_set: list[TokenizedExample] | None,
    **options: Any,
) -> Callable[..., TrainingResult]:
    """``train`` bound to the job's model, examples, config and output folder, and ``options`` (callbacks,
    fence, objective)."""
    output_dir = job_dir(run.settings.adapters_dir, run.job.id)
    model, tokenizer = loaded.model, loaded.tokenizer
    return partial(
        train,
        model,
        tokenizer,
        train_set,
        plan.training,
        valid_examples=valid_set,
        output_dir=output_dir,
        **options,
    )
