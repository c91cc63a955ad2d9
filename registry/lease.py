"""A worker's lease on a job: the one guard ("is this job still mine?") and the one way to hand a job back.

A job is a worker's while it is ``running`` with the worker's id in ``worker_id``. ``check_lease`` answers
that for a worker that goes on writing for the job: renewing the lease (``registry.jobs.heartbeat``, which
also takes the job's row for the rest of the transaction, so what follows an OK answer is fenced) or, between
renewals, with one cheap SELECT that writes nothing and takes no lock. ``hand_back`` is how a job that did
not finish leaves a worker: the training job on a failure, graceful shutdown, and the sweeper for a worker
that died (after ``release_stale_lease`` took its lease away) all settle it with ``settle_unfinished``.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from registry.errors import error_object
from registry.jobs import (
    HeartbeatStatus,
    JobStatus,
    add_event,
    get_job,
    heartbeat,
    requested_stop,
    transition,
)
from registry.models import Job

logger = logging.getLogger(__name__)
WORKER_LOST = "worker_lost"


def holds_lease(job: Job | None, worker_id: str) -> bool:
    """True when ``job`` is running under ``worker_id``."""
    return job is not None and job.status == JobStatus.RUNNING and job.worker_id == worker_id


def check_lease(session: Session, job_id: str, worker_id: str, *, renew: bool = True) -> HeartbeatStatus:
    """Whether ``job_id`` is still ``worker_id``'s and not being cancelled; renew the lease if ``renew``.

    With ``renew`` the job's row stays taken until the transaction commits (see ``heartbeat``); without
    it the check is one SELECT that neither writes nor locks, cheap enough for every training step.
    """
    if renew:
        return heartbeat(session, job_id, worker_id)
    row = session.execute(
        select(Job.status, Job.worker_id, Job.cancel_requested, Job.pause_requested).where(Job.id == job_id)
    ).one_or_none()
    if row is None or row.status != JobStatus.RUNNING or row.worker_id != worker_id:
        return HeartbeatStatus.LOST
    return requested_stop(row.cancel_requested, row.pause_requested)


def settle_unfinished(
    session: Session, job: Job, message: str, *, level: str = "info", max_attempts: int | None = None
) -> JobStatus:
    """Decide the fate of a running job that no worker holds any more, and return its new status.

    A job whose cancellation was requested is cancelled (a queued job with a pending cancel would never be
    claimed again); one whose pause was requested is paused (a resume continues from its newest checkpoint);
    one that was started ``max_attempts`` times fails with ``worker_lost``; any other goes
    back to ``queued`` with the event ``message``.

    Raises:
        InvalidTransition: If another process changed the job's status first.
    """
    if job.cancel_requested:
        transition(session, job, JobStatus.CANCELLED)
    elif job.pause_requested:
        transition(session, job, JobStatus.PAUSED)
    elif max_attempts is not None and job.attempts >= max_attempts:
        transition(session, job, JobStatus.FAILED, lost_error(job.attempts))
    else:
        transition(session, job, JobStatus.QUEUED)
        add_event(session, job.id, level, message)
    return JobStatus(job.status)


def hand_back(
    session: Session, job_id: str, worker_id: str, message: str, *, level: str = "info"
) -> JobStatus | None:
    """Return a job ``worker_id`` holds but did not finish to ``queued`` (``settle_unfinished``).

    Returns:
        The job's status afterwards (``queued``, ``cancelled`` or ``paused``), or None if it was not ours.

    Raises:
        InvalidTransition: If another process changed the job's status first.
    """
    job = get_job(session, job_id)
    if not holds_lease(job, worker_id):
        logger.warning("job %s: not ours any more, not handing it back", job_id)
        return None
    return settle_unfinished(session, job, message, level=level)


def release_stale_lease(session: Session, job_id: str, cutoff: float) -> Job | None:
    """Take the lease of a running job whose worker last beat before ``cutoff``; None if it beat since.

    One conditional UPDATE, so a worker that comes back to life finds the job no longer its own.
    """
    released = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .where(or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))
        .values(worker_id=None),
        execution_options={"synchronize_session": False},
    )
    return get_job(session, job_id) if released.rowcount == 1 else None


def lost_error(attempts: int) -> dict[str, Any]:
    """The error of a job whose worker stopped responding ``attempts`` times."""
    message = f"The worker running this job stopped responding; gave up after {attempts} attempts"
    return error_object(WORKER_LOST, message)
