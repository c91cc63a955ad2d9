"""What "auto" settles once the worker holds the model and the data: the learning rate, the max length and
the hold-out.

The API resolves a job without loading its model, so a learning rate left "auto" is chosen here from the
model's width (``ResolvedJobSpec.for_model``) and written back to the job (its ``method`` and
``hyperparameters``, which the API echoes) with an event saying why. A ``max_length`` still "auto" (the API
had no tokenizer for the model) is the longest example's tokens, stored and announced alike. A spec with a
``validation_holdout`` and no validation file trains on the rest of the training file and validates on the
held-out examples.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.data.holdout import split_holdout
from diablo_core.data.tokenization import TokenizedExample
from diablo_core.spec import ResolvedJobSpec
from diablo_core.spec.auto import block_input_size
from diablo_core.training.loop import TrainingResult
from registry.jobs import add_event
from registry.models import Job

MAX_INDICES_SHOWN = 10


def fit_to_model(
    sessions: sessionmaker[Session], job_id: str, spec: ResolvedJobSpec, hidden_size: int
) -> ResolvedJobSpec:
    """The job's spec with its learning rate chosen for the model; the job records it and an event."""
    fitted = spec.for_model(hidden_size)
    chosen = "chosen for the model" if spec.learning_rate == "auto" else "as given"
    data = {"learning_rate": fitted.learning_rate, "hidden_size": hidden_size}
    if spec.num_blocks is None:  # LoRA: its rate does not follow the width
        why = f"{chosen}: LoRA's rate"
    else:
        data["block_size"] = block = block_input_size(hidden_size, spec.num_blocks)
        why = f"{chosen}: hidden size {hidden_size}, {spec.num_blocks} blocks of {block} inputs"
    message = (
        f"Learning rate {fitted.learning_rate:.3g} ({why}; multiplier {fitted.learning_rate_multiplier:.3g})"
    )
    with sessions.begin() as session:
        values = {"method": fitted.to_dict(), "hyperparameters": fitted.openai_view()}
        session.execute(update(Job).where(Job.id == job_id).values(**values))
        add_event(session, job_id, "info", message, data=data)
    return fitted


def fit_max_length(
    sessions: sessionmaker[Session] | None,
    job_id: str,
    spec: ResolvedJobSpec,
    longest_example: int,
    context_length: int | None,
) -> ResolvedJobSpec:
    """The spec with an "auto" ``max_length`` resolved; the job records it and an event (``sessions`` None:
    resolve only, as every rank but 0 does)."""
    fitted = spec.fit_max_length(longest_example, context_length)
    if sessions is None or fitted is spec:
        return fitted
    context = "" if context_length is None else f", within the model's context of {context_length}"
    message = f"Max length {fitted.max_length} tokens (auto: the longest example{context})"
    data = {"max_length": fitted.max_length, "context_length": context_length}
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(method=fitted.to_dict()))
        add_event(session, job_id, "info", message, data=data)
    return fitted


def hold_out(
    sessions: sessionmaker[Session] | None,
    job_id: str,
    examples: list[TokenizedExample],
    count: int,
    seed: int,
) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    """Split ``count`` validation examples off the training examples (by the job's seed) and say which in an
    event (``sessions`` None: split only, as every rank but 0 of a multi-process job does)."""
    split = split_holdout(examples, count, seed)
    if sessions is None:
        return split.train, split.valid
    numbers = [index + 1 for index in split.valid_indices]
    shown = ", ".join(map(str, numbers[:MAX_INDICES_SHOWN])) + (", ..." if count > MAX_INDICES_SHOWN else "")
    message = (
        f"Held out {count} of {len(examples)} training examples for validation (examples {shown}); "
        f"training on the other {len(split.train)}"
    )
    data: dict[str, Any] = {"validation_holdout": count, "held_out_examples": numbers}
    with sessions.begin() as session:
        add_event(session, job_id, "info", message, data=data)
    return split.train, split.valid


def best_message(result: TrainingResult) -> str:
    """The event naming the checkpoint published: the step of the best exact match on the evaluation file's
    answers (ties: the lower validation loss), or of the lowest validation loss."""
    by_answers = result.best_exact_match is not None
    stop = ""
    if result.early_stopped:
        what = "the evaluation's exact match" if by_answers else "the validation loss"
        steps = f"step {result.steps} of at most {result.total_steps}"
        stop = f"Early stopping at {steps}: {what} stopped improving. "
    if by_answers:
        loss = "" if result.best_eval_loss is None else f", validation loss {result.best_eval_loss:.4f}"
        best = f"the best exact match of the run on the evaluation file ({result.best_exact_match:.3f}{loss})"
    else:
        best = f"the lowest validation loss of the run ({result.best_eval_loss:.4f})"
    return f"{stop}The fine-tuned model is the adapter of step {result.best_step}, {best}"


def best_data(result: TrainingResult) -> dict[str, Any]:
    """The data of ``best_message``'s event."""
    return {
        "best_step": result.best_step,
        "best_valid_loss": result.best_eval_loss,
        "best_eval_exact_match": result.best_exact_match,
        "early_stopped": result.early_stopped,
        "steps": result.steps,
    }
