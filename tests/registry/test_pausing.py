"""Pausing and resuming in the registry: the flag a running job's worker reads, and the status moves."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from registry.jobs import (
    HeartbeatStatus,
    InvalidTransition,
    JobStatus,
    claim_job,
    create_job,
    heartbeat,
    list_events,
    request_cancel,
    transition,
)
from registry.lease import check_lease, release_stale_lease, settle_unfinished
from registry.models import Job
from registry.pausing import request_pause, resume


def _job(session: Session, status: JobStatus) -> Job:
    job = create_job(session, model="base-model", training_file="file-train")
    job.status = status
    session.commit()
    return job


def _running(session: Session) -> Job:
    job = _job(session, JobStatus.QUEUED)
    assert claim_job(session, job.id, "worker-a") is not None
    session.commit()
    return job


def _messages(session: Session, job_id: str) -> list[str]:
    return [event.message for event in reversed(list_events(session, job_id, limit=100).data)]


def test_a_queued_job_pauses_at_once_and_resumes_to_the_queue(session: Session) -> None:
    job = _job(session, JobStatus.QUEUED)
    request_pause(session, job)
    assert (job.status, job.pause_requested, job.finished_at) == ("paused", False, None)
    resume(session, job)
    session.commit()
    assert job.status == "queued"
    assert _messages(session, job.id)[-2:] == ["The job was paused", "The job was resumed and queued"]


def test_a_running_job_is_asked_and_its_worker_releases_it(session: Session) -> None:
    job = _running(session)
    job.estimated_finish = 12345
    request_pause(session, job)
    session.commit()
    assert (job.status, job.pause_requested) == ("running", True)
    assert heartbeat(session, job.id, "worker-a") == HeartbeatStatus.PAUSE_REQUESTED
    assert check_lease(session, job.id, "worker-a", renew=False) == HeartbeatStatus.PAUSE_REQUESTED
    transition(session, job, JobStatus.PAUSED)  # what the worker does after its checkpoint
    session.commit()
    assert (job.status, job.worker_id, job.heartbeat_at) == ("paused", None, None)
    assert (job.pause_requested, job.estimated_finish) == (False, None)
    assert _messages(session, job.id)[-2:] == [
        "Pause requested; the job stops at its next step",
        "The job was paused",
    ]
    assert claim_job(session, job.id, "worker-b") is None  # a paused job waits for a resume


def test_a_cancel_wins_over_a_pause(session: Session) -> None:
    job = _running(session)
    request_pause(session, job)
    request_cancel(session, job)
    assert heartbeat(session, job.id, "worker-a") == HeartbeatStatus.CANCEL_REQUESTED
    with pytest.raises(InvalidTransition, match="is being cancelled; it cannot become paused"):
        request_pause(session, job)


@pytest.mark.parametrize(
    "status", [JobStatus.VALIDATING_FILES, JobStatus.PAUSED, JobStatus.SUCCEEDED, JobStatus.CANCELLED]
)
def test_only_queued_or_running_jobs_pause(session: Session, status: JobStatus) -> None:
    job = _job(session, status)
    with pytest.raises(InvalidTransition, match=f"is {status}; it cannot become paused"):
        request_pause(session, job)
    assert job.status == status and job.pause_requested is False


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED])
def test_only_paused_jobs_resume(session: Session, status: JobStatus) -> None:
    job = _job(session, status)
    with pytest.raises(InvalidTransition, match=f"is {status}; it cannot become queued"):
        resume(session, job)
    assert job.status == status


def test_a_paused_job_is_cancelled_at_once(session: Session) -> None:
    job = _job(session, JobStatus.QUEUED)
    request_pause(session, job)
    request_cancel(session, job)
    assert job.status == "cancelled" and job.finished_at is not None


def test_a_pausing_job_whose_worker_died_ends_paused(session: Session) -> None:
    job = _running(session)
    request_pause(session, job)
    session.commit()
    released = release_stale_lease(session, job.id, cutoff=job.heartbeat_at + 1)
    assert released is not None
    assert settle_unfinished(session, released, "Worker lost", max_attempts=3) == JobStatus.PAUSED
    assert (released.status, released.worker_id) == ("paused", None)
