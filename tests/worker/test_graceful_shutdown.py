"""Graceful shutdown: a worker asked to stop checkpoints the current step, hands its job back, and exits.

The first tests drive ``run_training_job`` in this process and set the stop flag the way the Celery signal
does; the last one sends SIGTERM to a real worker process and lets a second worker finish the job.
"""

from __future__ import annotations

import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.training.checkpoints import is_resumable
from registry.db import get_sessionmaker, upgrade_database
from registry.jobs import claim_job, get_job, request_cancel
from registry.models import Checkpoint, JobEvent
from registry.queue import TRAIN_TASK, enqueue_training
from registry.settings import Settings
from tests.worker.conftest import chat_example, jsonl, make_settings, queue_job
from tests.worker.test_components import progress_at
from tests.worker.test_job_outcomes import job_row, messages, metric_steps, on_step
from tests.worker.test_worker_process import REDIS_URL, worker_env
from tests.worker.worker_process import start_worker, stop_worker, wait_for
from worker import shutdown, training_job
from worker.progress import JobReporter
from worker.resume import find_resume_point
from worker.training_job import run_training_job

WORKER = "test-worker:1"
SHUTDOWN_EVENT = re.compile(r"Worker shutting down; checkpointed at step (\d+), re-queued")
RESUMED_EVENT = re.compile(r"Resuming from step (\d+) \(checkpoint .*\)")


@pytest.fixture(autouse=True)
def no_stop_request() -> Iterator[None]:
    """Every test starts and ends with the process-wide flag clear."""
    shutdown.clear_stop()
    yield
    shutdown.clear_stop()


def resume_path(sessions: sessionmaker[Session], job_id: str) -> Path | None:
    with sessions() as session:
        return find_resume_point(session, job_id).path


def reporter_for(sessions: sessionmaker[Session], job_id: str, flag: list[bool]) -> JobReporter:
    return JobReporter(
        sessions,
        job_id,
        WORKER,
        fine_tuned_model="ft:m::x",
        heartbeat_interval_s=10.0,
        shutting_down=lambda: flag[0],
    )


def _claimed(new_job: Callable[..., str], sessions: sessionmaker[Session]) -> str:
    """A new job that this test's worker has claimed."""
    job_id = new_job()
    with sessions.begin() as session:
        claim_job(session, job_id, WORKER)
    return job_id


def test_the_reporter_stops_training_when_the_worker_shuts_down(
    new_job: Callable[..., str], sessions: sessionmaker[Session]
) -> None:
    job_id = _claimed(new_job, sessions)
    flag = [False]
    reporter = reporter_for(sessions, job_id, flag)
    assert reporter.on_progress(progress_at(1, 100)) is False and reporter.stop_reason is None
    flag[0] = True
    assert reporter.on_progress(progress_at(2, 100)) is True and reporter.stop_reason == "shutdown"


def test_a_pending_cancel_wins_over_a_shutdown_in_the_reporter(
    new_job: Callable[..., str], sessions: sessionmaker[Session]
) -> None:
    job_id = _claimed(new_job, sessions)
    with sessions.begin() as session:
        request_cancel(session, get_job(session, job_id))
    reporter = reporter_for(sessions, job_id, [True])
    assert reporter.on_progress(progress_at(1, 100)) is True and reporter.stop_reason == "cancelled"


def queued_task_args(settings: Settings) -> list[list[str]]:
    """The job ids of the train messages waiting in the (SQLite) broker queue, taken off the queue."""
    found = []
    with Connection(settings.broker_url) as connection, connection.SimpleQueue(settings.queue_name) as queue:
        while len(queue):
            message = queue.get(timeout=1)
            assert message.headers["task"] == TRAIN_TASK
            found.append(message.payload[0])
            message.ack()
    return found


def test_a_shutdown_mid_training_checkpoints_hands_back_and_the_next_run_resumes(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    job_id = new_job(diablo={"checkpoint_every": 0})  # no periodic checkpoints: any one is the shutdown's
    on_step(monkeypatch, lambda step: shutdown.request_stop() if step == 3 else None)
    assert run_training_job(job_id, settings, WORKER) == "queued"
    job = job_row(sessions, job_id)
    assert (job.status, job.worker_id, job.error) == ("queued", None, None)
    assert messages(sessions, job_id)[-1] == "Worker shutting down; checkpointed at step 3, re-queued"
    checkpoint = settings.adapters_dir / job_id / "checkpoints" / "step-3"
    assert is_resumable(checkpoint)
    assert resume_path(sessions, job_id) == checkpoint
    with sessions() as session:
        assert [c.step_number for c in session.scalars(select(Checkpoint))] == [3]
    assert queued_task_args(settings) == [[job_id]]

    monkeypatch.undo()
    shutdown.clear_stop()
    assert run_training_job(job_id, settings, "test-worker:2") == "succeeded"
    assert matched_steps(RESUMED_EVENT, events_of(sessions, job_id)) == [3]
    assert metric_steps(sessions, job_id) == [1, 2, 3, 4, 5, 6]


def test_a_cancel_during_a_shutdown_cancels_the_job(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    job_id = new_job()

    def shut_down_then_cancel(step: int) -> None:
        if step == 2:
            shutdown.request_stop()
            with sessions.begin() as session:
                request_cancel(session, get_job(session, job_id))

    on_step(monkeypatch, shut_down_then_cancel)
    assert run_training_job(job_id, settings, WORKER) == "cancelled"
    assert messages(sessions, job_id)[-1] == "The job was cancelled"
    assert queued_task_args(settings) == []


def test_a_shutdown_before_training_hands_the_job_back_without_a_checkpoint(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    job_id = new_job()
    real_resolve = training_job.resolve_device

    def stop_while_loading(name: str):  # SIGTERM arrives while the model and data load
        shutdown.request_stop()
        return real_resolve(name)

    monkeypatch.setattr(training_job, "resolve_device", stop_while_loading)
    assert run_training_job(job_id, settings, WORKER) == "queued"
    assert messages(sessions, job_id)[-1] == "Worker shutting down before training started; re-queued"
    assert resume_path(sessions, job_id) is None
    assert queued_task_args(settings) == [[job_id]]


def test_a_worker_that_is_shutting_down_claims_no_new_job(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = new_job()
    shutdown.request_stop()
    assert run_training_job(job_id, settings, WORKER) is None
    assert (job_row(sessions, job_id).status, job_row(sessions, job_id).attempts) == ("queued", 0)


# A run long enough to be interrupted early, short enough for the second worker to finish quickly.
LONG_RUN = {"max_steps": 150, "batch_size": 4, "checkpoint_every": 0, "learning_rate": 1e-2}
# A worker stops after its current step instead of training to the end (the job is then queued at a step
# short of max_steps); on a loaded machine the step, the checkpoint and Celery's shutdown take 10 s or more.
EXIT_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 180.0


def events_of(sessions: sessionmaker[Session], job_id: str) -> list[JobEvent]:
    with sessions() as session:
        return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def matched_steps(pattern: re.Pattern[str], events: list[JobEvent]) -> list[int]:
    return [int(m.group(1)) for m in (pattern.fullmatch(event.message) for event in events) if m]


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_checkpoints_the_step_and_another_worker_resumes_it(
    postgres_url: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    queue = f"diablo-test-{secrets.token_hex(6)}"
    settings = make_settings(tmp_path / "data", postgres_url, broker_url=REDIS_URL, queue_name=queue)
    upgrade_database(settings.database_url)
    sessions = get_sessionmaker(settings.database_url)
    content = jsonl([chat_example(i) for i in range(64)])
    job_id = queue_job(sessions, settings, tiny_model_dir, content, diablo=LONG_RUN)
    try:
        step = interrupt_with_sigterm(settings, sessions, job_id, tmp_path / "worker1.log")
        finish_on_a_new_worker(settings, sessions, job_id, tmp_path / "worker2.log")
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()
    resumed = matched_steps(RESUMED_EVENT, events_of(sessions, job_id))
    assert resumed == [step]


def interrupt_with_sigterm(
    settings: Settings, sessions: sessionmaker[Session], job_id: str, log: Path
) -> int:
    """Start a worker on the job, SIGTERM it after a few steps; return the step it checkpointed."""
    process = start_worker(worker_env(settings), settings.queue_name, log)
    try:
        enqueue_training(job_id, settings)
        wait_for(lambda: len(metric_steps(sessions, job_id)) >= 3, JOB_TIMEOUT_S, process, log)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = process.wait(timeout=EXIT_TIMEOUT_S)
        assert code == 0, log.read_text()[-3000:]
        assert time.monotonic() - sent < EXIT_TIMEOUT_S
    finally:
        stop_worker(process, timeout=5)
    job = job_row(sessions, job_id)
    assert (job.status, job.worker_id, job.error) == ("queued", None, None), log.read_text()[-3000:]
    steps = matched_steps(SHUTDOWN_EVENT, events_of(sessions, job_id))
    assert len(steps) == 1 and 3 <= steps[0] < LONG_RUN["max_steps"]
    checkpoint = settings.adapters_dir / job_id / "checkpoints" / f"step-{steps[0]}"
    assert resume_path(sessions, job_id) == checkpoint
    return steps[0]


def finish_on_a_new_worker(
    settings: Settings, sessions: sessionmaker[Session], job_id: str, log: Path
) -> None:
    """A second worker takes the re-sent message (nobody enqueues again) and finishes the job."""
    process = start_worker(worker_env(settings), settings.queue_name, log)
    try:
        wait_for(lambda: job_row(sessions, job_id).status == "succeeded", JOB_TIMEOUT_S, process, log)
    finally:
        assert stop_worker(process) == 0, log.read_text()[-3000:]
    assert job_row(sessions, job_id).attempts == 2
    assert metric_steps(sessions, job_id)[-1] == LONG_RUN["max_steps"]
