"""Pausing and resuming a job: ``request_pause`` and ``resume``.

A queued job pauses at once. A running job's worker is asked to stop (the ``pause_requested`` flag, read at
every step like a cancellation): it writes a resumable checkpoint of the step it finished, releases the job
as ``paused`` and takes the next job. Resuming puts the job back in ``queued``; the caller sends it to the
workers once that is committed, and the worker that claims it continues from the newest checkpoint
(``worker.resume``). A cancel wins over a pause, and a pause that comes after the last step is too late:
the job is published.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from registry.jobs import InvalidTransition, JobStatus, act_on_request, add_event, transition
from registry.models import Job

PAUSABLE = (JobStatus.QUEUED, JobStatus.RUNNING)


def request_pause(session: Session, job: Job) -> Job:
    """Pause a queued job now, or ask the worker of a running one to checkpoint and release it.

    The flag is set in one conditional UPDATE on a queued or running job; a queued job then moves to
    ``paused`` unless a worker claimed it meanwhile, in which case that worker sees the flag and pauses.

    Raises:
        InvalidTransition: If the job is neither queued nor running (finished, paused, being validated).
    """
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_([status.value for status in PAUSABLE]))
        .where(Job.cancel_requested.is_(False))
        .values(pause_requested=True),
        execution_options={"synchronize_session": False},
    )
    session.refresh(job)
    if result.rowcount != 1:
        raise InvalidTransition(job.id, _shown_status(job), JobStatus.PAUSED)
    message = "Pause requested; the job stops at its next step"
    return act_on_request(session, job, (JobStatus.QUEUED,), JobStatus.PAUSED, message)


def resume(session: Session, job: Job) -> Job:
    """Move a paused job back to ``queued``; the caller enqueues it after committing.

    Raises:
        InvalidTransition: If the job is not paused.
    """
    if job.status != JobStatus.PAUSED:
        raise InvalidTransition(job.id, _shown_status(job), JobStatus.QUEUED)
    return transition(session, job, JobStatus.QUEUED)


def note_pause(step: int | None, session: Session, job: Job) -> None:
    """The event that says where a paused job resumes (``step``: None when training had not started)."""
    if step is None:
        message = "Paused before training started; resuming starts from the newest checkpoint, if any"
    else:
        message = f"Paused at step {step} with a checkpoint; resuming continues from that step"
    add_event(session, job.id, "info", message, data={"step": step})


def _shown_status(job: Job) -> str:
    """The status to name in a refusal: a running job being cancelled is reported as such."""
    return "being cancelled" if job.cancel_requested and job.status == JobStatus.RUNNING else job.status
