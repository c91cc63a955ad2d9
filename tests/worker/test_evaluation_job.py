"""A job with an evaluation file: answers scored at each evaluation, reported in events, checkpoints and the
results file, and the published model is the checkpoint with the best exact match."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from registry.artifacts import get_adapter
from registry.jobs import get_job
from registry.models import Checkpoint, File, JobEvent
from registry.settings import Settings
from tests.worker.conftest import chat_example, jsonl
from worker.training_job import run_training_job

WORKER = "test-worker:1"


def events_of(session: Session, job_id: str) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def test_a_job_scores_its_evaluation_file_and_publishes_the_best_exact_match(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    # A task the tiny model learns within a few steps: answer "ok" to any colour question.
    task = [
        {"messages": [*chat_example(i)["messages"][:1], {"role": "assistant", "content": "ok"}]}
        for i in range(16)
    ]
    training, held_out = jsonl(task[:12]), jsonl(task[12:])
    job_id = new_job(
        content=training, evaluation=held_out, diablo={"eval_every": 3, "n_epochs": 4, "learning_rate": 4e-3}
    )
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        job, events = get_job(session, job_id), events_of(session, job_id)
        adapter = get_adapter(session, job.fine_tuned_model)
        checkpoints = {c.step_number: c for c in session.scalars(select(Checkpoint))}
        csv_lines = Path(session.get(File, job.result_files[0]).storage_path).read_text().splitlines()
    announced = next(e for e in events if e.message.startswith("Evaluating greedy answers"))
    assert announced.data == {"evaluation_examples": 4, "answered_per_evaluation": 4, "eval_every": 3}
    scored = [e.data for e in events if e.type == "metrics" and "eval_exact_match" in e.data]
    assert [d["step"] for d in scored] == [3, 6, 9, 12]  # 4 epochs of 3 steps, every 3rd
    assert all("valid_loss" not in d for d in scored)  # no validation file, nothing held out
    assert all(0 <= d["eval_exact_match"] <= d["eval_contains"] <= 1 for d in scored)
    assert any(e.message.startswith("Step 3: exact match=") for e in events)
    best = next(e for e in events if "The fine-tuned model is the adapter of step" in e.message)
    top = max(d["eval_exact_match"] for d in scored)
    assert scored[0]["eval_exact_match"] < top == 1.0  # learnt along the run
    first_top = next(
        d["step"] for d in scored if d["eval_exact_match"] == top
    )  # no validation: ties go first
    assert (best.data["best_step"], best.data["best_eval_exact_match"]) == (first_top, top)
    assert "best exact match" in best.message
    assert adapter.sha256 == checkpoints[first_top].sha256  # checkpoints at every epoch's end
    assert checkpoints[first_top].metrics["eval_exact_match"] == top
    assert csv_lines[0].endswith(",eval_exact_match,eval_contains") and len(csv_lines) == 13


def test_an_evaluation_file_gone_bad_fails_the_job_with_its_line(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    bad = jsonl([chat_example(0), {"messages": [{"role": "assistant", "content": "no prompt"}]}])
    job_id = new_job(evaluation=bad)
    assert run_training_job(job_id, settings, WORKER) == "failed"
    with sessions() as session:
        error = get_job(session, job_id).error
    assert (error["code"], error["param"]) == ("invalid_evaluation_file", "evaluation_file")
    assert "line 2" in error["message"], json.dumps(error)
