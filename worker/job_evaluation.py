"""A job's evaluation file: its held-out chat examples, answered greedily at each evaluation of the run.

The worker reads the whole file (checked at creation, read again here as its data may be gone) and training
answers its first ``TRAINING_EVAL_EXAMPLES`` examples each time (``diablo_core.training.evaluation``). The
events say how many are answered, when, and (once the job succeeds) which checkpoint had the best answers.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from diablo_core.data.datasets import DatasetLimits
from diablo_core.evaluation.examples import TRAINING_EVAL_EXAMPLES, EvalExample
from registry.jobs import add_event
from registry.models import Job
from registry.settings import Settings
from worker.job_inputs import load_evaluation_file


def load_answers(
    sessions: sessionmaker[Session], job: Job, settings: Settings, eval_every: int | None
) -> list[EvalExample] | None:
    """The evaluation file's examples (None without one), with an event saying how many each evaluation
    answers.

    Raises:
        JobDataError: ``invalid_evaluation_file`` for a file that is gone or invalid (line numbers).
    """
    if job.evaluation_file is None:
        return None
    limits = DatasetLimits(settings.max_json_depth, settings.max_turns_per_example)
    with sessions() as session:
        examples = load_evaluation_file(session, job.evaluation_file, settings.files_dir, limits)
    answered = min(len(examples), TRAINING_EVAL_EXAMPLES)
    when = f"every {eval_every} steps and at the end" if eval_every else "at the end"
    message = (
        f"Evaluating greedy answers to {answered} of the {len(examples)} examples of the evaluation file "
        f"{when}; the fine-tuned model is the checkpoint with the best exact match"
    )
    data = {
        "evaluation_examples": len(examples),
        "answered_per_evaluation": answered,
        "eval_every": eval_every,
    }
    with sessions.begin() as session:
        add_event(session, job.id, "info", message, data=data)
    return examples
