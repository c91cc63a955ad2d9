"""The one lease guard and the one hand-back path, on SQLite and Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from registry.jobs import HeartbeatStatus, InvalidTransition, JobStatus, claim_job, create_job, transition
from registry.lease import WORKER_LOST, check_lease, hand_back, release_stale_lease, settle_unfinished
from registry.models import Job

WORKER = "w1"


def running_job(sessions: sessionmaker[Session], *, at: int = 1_000, **values: object) -> str:
    with sessions.begin() as session:
        job = create_job(session, model="base", training_file="file-x")
        transition(session, job, JobStatus.QUEUED)
    with sessions.begin() as session:
        claim_job(session, job.id, WORKER, now=at)
        if values:
            session.execute(update(Job).where(Job.id == job.id).values(**values))
    return job.id


def row(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        return session.get_one(Job, job_id)


def test_the_read_only_check_writes_nothing_and_renewing_writes_the_heartbeat(
    sessions: sessionmaker[Session],
) -> None:
    job_id = running_job(sessions)
    with sessions.begin() as session:
        assert check_lease(session, job_id, WORKER, renew=False) == HeartbeatStatus.OK
        assert check_lease(session, job_id, "w2", renew=False) == HeartbeatStatus.LOST
        assert check_lease(session, "ftjob-missing", WORKER, renew=False) == HeartbeatStatus.LOST
    assert row(sessions, job_id).heartbeat_at == 1_000
    with sessions.begin() as session:
        assert check_lease(session, job_id, WORKER) == HeartbeatStatus.OK
    assert row(sessions, job_id).heartbeat_at > 1_000
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    with sessions.begin() as session:
        assert check_lease(session, job_id, WORKER, renew=False) == HeartbeatStatus.CANCEL_REQUESTED
        assert check_lease(session, job_id, WORKER) == HeartbeatStatus.CANCEL_REQUESTED


def test_hand_back_requeues_only_a_job_the_worker_holds(sessions: sessionmaker[Session]) -> None:
    job_id = running_job(sessions)
    with sessions.begin() as session:
        assert hand_back(session, job_id, "w2", "not mine") is None
    assert row(sessions, job_id).status == JobStatus.RUNNING
    with sessions.begin() as session:
        assert hand_back(session, job_id, WORKER, "back to the queue", level="warn") == JobStatus.QUEUED
    job = row(sessions, job_id)
    assert (job.status, job.worker_id, job.heartbeat_at) == (JobStatus.QUEUED, None, None)
    with sessions.begin() as session:  # not running any more: nobody holds it
        assert hand_back(session, job_id, WORKER, "again") is None


def test_a_pending_cancel_wins_over_a_hand_back(sessions: sessionmaker[Session]) -> None:
    job_id = running_job(sessions, cancel_requested=True)
    with sessions.begin() as session:
        assert hand_back(session, job_id, WORKER, "back to the queue") == JobStatus.CANCELLED
    assert row(sessions, job_id).status == JobStatus.CANCELLED


def test_a_released_job_out_of_attempts_fails_with_worker_lost(sessions: sessionmaker[Session]) -> None:
    job_id = running_job(sessions, at=1_000, attempts=3)
    with sessions.begin() as session:
        assert release_stale_lease(session, job_id, cutoff=500) is None  # it beat after the cutoff
        job = release_stale_lease(session, job_id, cutoff=2_000)
        assert job is not None and job.worker_id is None
        assert settle_unfinished(session, job, "lost", max_attempts=3) == JobStatus.FAILED
    error = row(sessions, job_id).error
    assert error == {"code": WORKER_LOST, "param": None, "message": error["message"]}
    assert "gave up after 3 attempts" in error["message"]


def test_settling_a_job_another_process_finished_raises(sessions: sessionmaker[Session]) -> None:
    job_id = running_job(sessions)
    with sessions() as stale:
        job = stale.get_one(Job, job_id)
        with sessions.begin() as other:
            transition(other, other.get_one(Job, job_id), JobStatus.SUCCEEDED)
        with pytest.raises(InvalidTransition):
            settle_unfinished(stale, job, "back to the queue")
