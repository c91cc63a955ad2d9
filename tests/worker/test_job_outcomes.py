"""How a job ends when things go wrong: bad data, crashes, cancellation, interruption and resume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from registry.artifacts import checkpoint_model_name
from registry.jobs import get_job, request_cancel
from registry.models import Adapter, Checkpoint, Job, JobEvent
from registry.settings import Settings
from tests.worker.conftest import chat_example, jsonl
from worker import artifact_store, training_call
from worker.training_job import run_training_job

WORKER = "test-worker:1"


def on_step(monkeypatch: pytest.MonkeyPatch, action: Callable[[int], None]) -> None:
    """Run ``action(step)`` after every optimizer step, before the job's own progress callback."""
    real_train = training_call.train

    class Hook:
        def on_progress(self, progress) -> None:
            action(progress.step)

    def train(*args, callbacks, **kwargs):
        return real_train(*args, callbacks=[Hook(), *callbacks], **kwargs)

    monkeypatch.setattr(training_call, "train", train)


def files_under(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path, with the sha256 of its bytes."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def job_row(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        return get_job(session, job_id)


def messages(sessions: sessionmaker[Session], job_id: str) -> list[str]:
    with sessions() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        return [event.message for event in events]


def metric_steps(sessions: sessionmaker[Session], job_id: str) -> list[int]:
    with sessions() as session:
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        return [e.data["step"] for e in events if e.type == "metrics" and "train_loss" in e.data]


def test_an_example_longer_than_max_length_fails_as_the_users_error(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 200}]
    long_example = {"messages": turns}
    job_id = new_job(jsonl([chat_example(0), long_example, chat_example(1)]), diablo={"max_length": 64})
    assert run_training_job(job_id, settings, WORKER) == "failed"
    job = job_row(sessions, job_id)
    assert (job.error["code"], job.error["param"]) == ("invalid_training_file", "training_file")
    assert "line 2:" in job.error["message"] and "max_length 64" in job.error["message"]


def test_a_malformed_file_fails_with_line_numbers(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    content = jsonl([chat_example(0)]) + b'{"messages": [}\n' + jsonl([{"prompt": "a", "completion": "b"}])
    job_id = new_job(content)
    assert run_training_job(job_id, settings, WORKER) == "failed"
    error = job_row(sessions, job_id).error
    assert error["code"] == "invalid_training_file"
    assert "line 2:" in error["message"] and "line 3:" in error["message"]


def test_a_vanished_validation_file_fails_the_job(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = new_job(validation=jsonl([chat_example(1)]))
    (settings.files_dir / job_row(sessions, job_id).validation_file).unlink()
    assert run_training_job(job_id, settings, WORKER) == "failed"
    error = job_row(sessions, job_id).error
    assert (error["code"], error["param"]) == ("invalid_validation_file", "validation_file")


def test_target_modules_absent_from_the_model_fail_as_invalid_hyperparameters(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = new_job(diablo={"target_modules": ["w_in"]})
    assert run_training_job(job_id, settings, WORKER) == "failed"
    error = job_row(sessions, job_id).error
    assert (error["code"], error["param"]) == ("invalid_hyperparameters", "method.diablo.hyperparameters")
    assert "w_in" in error["message"]


def test_a_crash_fails_the_job_as_internal_and_keeps_the_traceback_in_logs(
    new_job: Callable[..., str],
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(step: int) -> None:
        raise RuntimeError("secret detail at /srv/path")

    on_step(monkeypatch, explode)
    job_id = new_job()
    assert run_training_job(job_id, settings, WORKER) == "failed"
    job = job_row(sessions, job_id)
    assert job.status == "failed" and job.error["code"] == "internal_error"
    assert "RuntimeError" in job.error["message"] and "secret" not in job.error["message"]
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


def test_cancel_is_honoured_within_one_step(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    job_id = new_job()

    def cancel_at_step_two(step: int) -> None:
        if step == 2:  # another process asks to cancel while the job trains
            with sessions.begin() as session:
                request_cancel(session, get_job(session, job_id))

    on_step(monkeypatch, cancel_at_step_two)
    assert run_training_job(job_id, settings, WORKER) == "cancelled"
    job = job_row(sessions, job_id)
    assert job.status == "cancelled" and job.finished_at is not None
    assert metric_steps(sessions, job_id) == [1, 2]
    assert messages(sessions, job_id)[-1] == "The job was cancelled"
    with sessions() as session:
        assert session.scalars(select(Adapter).where(Adapter.job_id == job_id)).all() == []
        assert [c.step_number for c in session.scalars(select(Checkpoint))] == [2]


def test_a_job_cancelled_while_queued_is_not_run(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = new_job()
    with sessions.begin() as session:
        request_cancel(session, get_job(session, job_id))
    assert run_training_job(job_id, settings, WORKER) is None
    job = job_row(sessions, job_id)
    assert (job.status, job.attempts) == ("cancelled", 0)


def test_a_worker_that_loses_its_job_writes_no_rows_and_no_files(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    job_id = new_job()
    folder = artifact_store.job_dir(settings.adapters_dir, job_id)
    before: dict[str, dict[str, str]] = {}

    def taken_over(step: int) -> None:
        if step == 2:  # another worker claimed the job after this one's lease looked stale
            with sessions.begin() as session:
                session.execute(update(Job).where(Job.id == job_id).values(worker_id="other:9"))
            before["files"] = files_under(settings.adapters_dir)

    on_step(monkeypatch, taken_over)
    assert run_training_job(job_id, settings, WORKER) is None
    job = job_row(sessions, job_id)
    assert (job.status, job.worker_id, job.error) == ("running", "other:9", None)
    with sessions() as session:
        assert session.scalars(select(Checkpoint)).all() == []
    # No stop checkpoint, no pruning, no final adapter: the folder is as the new owner saw it.
    assert files_under(settings.adapters_dir) == before["files"]
    assert not (folder / "checkpoints" / "step-2").exists()


def test_a_database_failure_hands_the_job_back_and_re_raises(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    def database_down(step: int) -> None:
        if step == 2:
            raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))

    on_step(monkeypatch, database_down)
    job_id = new_job()
    with pytest.raises(OperationalError):
        run_training_job(job_id, settings, WORKER)
    job = job_row(sessions, job_id)
    assert (job.status, job.worker_id) == ("queued", None)
    assert messages(sessions, job_id)[-1] == "Training was interrupted; the job will be retried"


def test_an_interrupted_job_resumes_from_its_latest_checkpoint(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    job_id = new_job()

    def die_at_step_five(step: int) -> None:
        if step == 5:  # after the full checkpoint at step 4 (checkpoint_every=4)
            raise SystemExit(1)

    on_step(monkeypatch, die_at_step_five)
    with pytest.raises(SystemExit):
        run_training_job(job_id, settings, WORKER)
    assert job_row(sessions, job_id).status == "queued"
    monkeypatch.undo()
    assert run_training_job(job_id, settings, "test-worker:2") == "succeeded"
    job = job_row(sessions, job_id)
    assert job.attempts == 2
    resumed = f"Resuming from step 4 (checkpoint {checkpoint_model_name(job.fine_tuned_model, 4)})"
    assert resumed in messages(sessions, job_id)
    assert metric_steps(sessions, job_id) == [1, 2, 3, 4, 5, 6]
    events = messages(sessions, job_id)
    step_five = next(i for i, message in enumerate(events) if message.startswith("Step 5/6"))
    assert events.index(resumed) < step_five
    state = json.loads((settings.adapters_dir / job_id / "checkpoints/step-4/trainer_state.json").read_text())
    assert state["step"] == 4


def test_an_interrupted_job_with_a_pending_cancel_ends_cancelled(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    job_id = new_job()

    def cancel_then_die(step: int) -> None:
        if step == 2:
            with sessions.begin() as session:
                request_cancel(session, get_job(session, job_id))
            raise SystemExit(1)

    on_step(monkeypatch, cancel_then_die)
    with pytest.raises(SystemExit):
        run_training_job(job_id, settings, WORKER)
    assert job_row(sessions, job_id).status == "cancelled"
