"""A job left to "auto" (#18): its learning rate fitted to the model, a held-out split, the best adapter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from transformers import AutoTokenizer

from diablo_core.data.tokenization import tokenize_example
from diablo_core.spec.auto import auto_learning_rate
from registry.artifacts import get_adapter
from registry.jobs import get_job
from registry.models import Checkpoint, JobEvent
from registry.settings import Settings
from tests.worker.conftest import chat_example, jsonl
from worker.training_job import run_training_job

WORKER = "test-worker:1"
AUTO = {"n_epochs": "auto", "learning_rate": None, "batch_size": 8}


def events_of(session: Session, job_id: str) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def test_auto_fits_the_learning_rate_and_holds_out_validation_examples(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    # max_steps fixes the length, so early stopping (and its hold-out) is asked for explicitly; the patience
    # outlasts the 6 steps, so every step runs.
    early = {"max_steps": 6, "early_stopping_patience": 10}
    job_id = new_job(content=jsonl([chat_example(i) for i in range(40)]), diablo=AUTO | early)
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        job, events = get_job(session, job_id), events_of(session, job_id)
    stored = job.method["diablo"]["hyperparameters"]
    # The tiny model is 64 wide; 4 blocks of 16 inputs.
    assert stored["learning_rate"] == pytest.approx(auto_learning_rate(64, 4))
    assert job.hyperparameters["learning_rate_multiplier"] == 1.0
    fitted = next(e for e in events if e.message.startswith("Learning rate"))
    assert (fitted.data["block_size"], fitted.data["hidden_size"]) == (16, 64)
    held = next(e for e in events if e.message.startswith("Held out"))
    assert held.data["validation_holdout"] == 10 and len(set(held.data["held_out_examples"])) == 10
    steps = [e.data for e in events if e.type == "metrics" and "train_loss" in e.data]
    valid = [e.data for e in events if e.type == "metrics" and "valid_loss" in e.data]
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5, 6] and valid


def test_the_best_checkpoint_is_published(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    # Validation answers the task never teaches: its loss is lowest early; the run stops 2 evaluations later.
    wrong = [{**chat_example(i), "messages": chat_example(i)["messages"][:1]} for i in range(4)]
    for example in wrong:
        example["messages"].append({"role": "assistant", "content": "Zzzz zzz."})
    diablo = {"n_epochs": 8, "early_stopping_patience": 2, "eval_every": 4}
    job_id = new_job(validation=jsonl(wrong), diablo=diablo)
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        job, events = get_job(session, job_id), events_of(session, job_id)
        adapter = get_adapter(session, job.fine_tuned_model)
        checkpoints = {c.step_number: c for c in session.scalars(select(Checkpoint))}
    best = next(e for e in events if "The fine-tuned model is the adapter of step" in e.message)
    step = best.data["best_step"]
    assert best.data["early_stopped"] and best.data["steps"] == step + 8 < 24
    assert adapter.sha256 == checkpoints[step].sha256  # checkpoints every 4 steps, evaluations too


def test_the_worker_resolves_an_auto_max_length_the_api_could_not(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, tiny_model_dir: Path
) -> None:
    """A job stored with max_length "auto" (no tokenizer in the API) gets the longest example's tokens."""
    examples = [chat_example(i) for i in range(6)]
    job_id = new_job(content=jsonl(examples), diablo={"max_length": "auto", "max_steps": 2})
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    longest = max(len(tokenize_example(example, tokenizer, None).input_ids) for example in examples)
    with sessions() as session:
        job, events = get_job(session, job_id), events_of(session, job_id)
    assert job.method["diablo"]["hyperparameters"]["max_length"] == longest
    fitted = next(e for e in events if e.message.startswith("Max length"))
    assert fitted.data == {"max_length": longest, "context_length": 512}


def test_under_auto_an_example_past_the_models_context_fails_with_its_line(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    long_example = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 600}]
    }
    job_id = new_job(content=jsonl([chat_example(0), chat_example(1), long_example]), diablo={"max_steps": 2})
    assert run_training_job(job_id, settings, WORKER) == "failed"
    with sessions() as session:
        error = get_job(session, job_id).error
    assert error["code"] == "invalid_training_file"
    assert "line 3:" in error["message"] and "max_length 512" in error["message"]
