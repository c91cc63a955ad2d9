"""The sweeper on SQLite and Postgres; the broker is replaced at its edge by a recording ``enqueue``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from registry.jobs import (
    HeartbeatStatus,
    JobStatus,
    claim_job,
    create_job,
    heartbeat,
    list_events,
    transition,
)
from registry.models import Job, JobEvent, now_unix
from registry.settings import Settings
from registry.sweeper import periodic_sweeps, recover_stale_jobs

TIMEOUT_S = 10.0


class RecordingQueue:
    """Stands in for ``enqueue_training``: records each job with the status other sessions see then."""

    def __init__(self, sessions: sessionmaker[Session], fail: bool = False) -> None:
        self.sessions, self.fail = sessions, fail
        self.sent: list[tuple[str, str]] = []

    def __call__(self, job_id: str, settings: Settings) -> str:
        with self.sessions() as session:
            self.sent.append((job_id, session.get_one(Job, job_id).status))
        if self.fail:
            raise ConnectionError("broker down")
        return "task-id"


@pytest.fixture
def settings(tmp_path: Path, migrated_database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=migrated_database_url,
        broker_url="memory://",
        heartbeat_interval_s=1.0,
        heartbeat_timeout_s=TIMEOUT_S,
    )


def running_job(sessions: sessionmaker[Session], at: int, attempts: int = 1, cancel: bool = False) -> str:
    """A job claimed by worker ``w1`` at unix time ``at`` that has been started ``attempts`` times."""
    with sessions.begin() as session:
        job = create_job(session, model="base", training_file="file-x")
        transition(session, job, JobStatus.QUEUED)
    with sessions.begin() as session:
        claim_job(session, job.id, "w1", now=at)
        values = {"attempts": attempts, "cancel_requested": cancel}
        session.execute(update(Job).where(Job.id == job.id).values(**values))
    return job.id


def queued_job(sessions: sessionmaker[Session], age_s: int) -> str:
    """A queued job whose every event happened ``age_s`` seconds ago."""
    with sessions.begin() as session:
        job = create_job(session, model="base", training_file="file-x")
        transition(session, job, JobStatus.QUEUED)
        session.execute(
            update(JobEvent).where(JobEvent.job_id == job.id).values(created_at=now_unix() - age_s)
        )
    return job.id


def story(sessions: sessionmaker[Session], job_id: str) -> tuple[Job, list[str]]:
    with sessions() as session:
        events = list_events(session, job_id, limit=100).data
        return session.get_one(Job, job_id), [event.message for event in reversed(events)]


def test_a_lost_job_is_requeued_and_sent_after_commit(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    now = now_unix()
    lost, alive = running_job(sessions, at=now - 60), running_job(sessions, at=now - 2)
    queue = RecordingQueue(sessions)
    assert recover_stale_jobs(sessions, settings, enqueue=queue, now=now) == [lost]
    assert queue.sent == [(lost, "queued")]  # the re-queue was committed before the message went out
    job, messages = story(sessions, lost)
    assert (job.status, job.worker_id, job.heartbeat_at, job.attempts) == ("queued", None, None, 1)
    assert messages[-1] == "Worker lost; re-queued (attempt 2)"
    assert story(sessions, alive)[0].status == "running"
    with sessions.begin() as session:  # the dead worker, were it to wake up, no longer holds the job
        assert heartbeat(session, lost, "w1") == HeartbeatStatus.LOST
        assert claim_job(session, lost, "w2").attempts == 2


def test_a_job_that_used_up_its_attempts_fails_as_worker_lost(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    now = now_unix()
    job_id = running_job(sessions, at=now - 60, attempts=3)
    queue = RecordingQueue(sessions)
    assert recover_stale_jobs(sessions, settings, max_attempts=3, enqueue=queue, now=now) == [job_id]
    job, messages = story(sessions, job_id)
    assert job.status == "failed" and job.finished_at is not None and queue.sent == []
    assert job.error == {
        "code": "worker_lost",
        "message": "The worker running this job stopped responding; gave up after 3 attempts",
        "param": None,
    }
    assert messages[-1].endswith("gave up after 3 attempts")


def test_a_lost_job_with_a_pending_cancel_is_cancelled(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    now = now_unix()
    job_id = running_job(sessions, at=now - 60, cancel=True)
    queue = RecordingQueue(sessions)
    assert recover_stale_jobs(sessions, settings, enqueue=queue, now=now) == [job_id]
    assert story(sessions, job_id)[0].status == "cancelled" and queue.sent == []


def test_a_queued_job_nobody_took_is_sent_again_once_per_timeout(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    idle, fresh = queued_job(sessions, age_s=700), queued_job(sessions, age_s=5)
    queue = RecordingQueue(sessions)
    assert recover_stale_jobs(sessions, settings, queued_after_s=600, enqueue=queue) == [idle]
    assert queue.sent == [(idle, "queued")]
    assert story(sessions, idle)[1][-1] == "No worker has taken the job yet; sent it to the queue again"
    # The event just recorded restarts the job's clock: the next sweep leaves it alone.
    assert recover_stale_jobs(sessions, settings, queued_after_s=600, enqueue=queue) == []
    assert [job_id for job_id, _ in queue.sent] == [idle]
    assert not [message for message in story(sessions, fresh)[1] if message.startswith("No worker")]


def test_a_broker_failure_leaves_the_job_queued_for_the_next_sweep(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    now = now_unix()
    job_id = running_job(sessions, at=now - 60)
    queue = RecordingQueue(sessions, fail=True)
    assert recover_stale_jobs(sessions, settings, enqueue=queue, now=now) == [job_id]
    assert queue.sent == [(job_id, "queued")] and story(sessions, job_id)[0].status == "queued"
    # Past the queued timeout of the events the first sweep wrote, at real time (up to a minute after `now`
    # on a loaded host: a margin of one second let a slow run cross the boundary and see no idle job).
    later = now + int(TIMEOUT_S) * 5 + 60
    assert recover_stale_jobs(sessions, settings, enqueue=queue, now=later) == [job_id]
    assert len(queue.sent) == 2


def test_the_api_sweeps_periodically_and_not_when_turned_off(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = running_job(sessions, at=now_unix() - 60)

    async def wait_inside(configured: Settings, seconds: float) -> None:
        async with periodic_sweeps(configured):
            await asyncio.sleep(seconds)

    asyncio.run(wait_inside(settings.model_copy(update={"sweep_interval_s": 0}), 0.3))
    assert story(sessions, job_id)[0].status == "running"
    asyncio.run(wait_inside(settings.model_copy(update={"sweep_interval_s": 0.05}), 1.0))
    assert story(sessions, job_id)[0].status == "queued"
