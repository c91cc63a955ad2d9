"""The life of a fine-tuning job: creation, status transitions, worker claims, heartbeats, events.

Every status change is a compare-and-set (``UPDATE ... WHERE status = <expected>``), so two processes that
race on one job (two workers claiming it, a cancel against a finishing worker) never both succeed. Each
change also records an event, so the event list tells the job's story without help from callers.
Functions flush but never commit: the caller owns the transaction and commits it promptly (on SQLite an open
write transaction holds the database's only write lock).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from registry.models import DEFAULT_PROJECT, Job, JobEvent, now_unix
from registry.pagination import Page, paginate

if TYPE_CHECKING:  # only its methods are called: `import registry` stays without diablo_core
    from diablo_core.spec import ResolvedJobSpec


class JobStatus(enum.StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Stopped at a checkpoint with its worker released; resuming queues it again (``registry.pausing``).
    PAUSED = "paused"


class HeartbeatStatus(enum.StrEnum):
    OK = "ok"
    CANCEL_REQUESTED = "cancel_requested"
    PAUSE_REQUESTED = "pause_requested"
    # The job is no longer running under this worker: stop without writing results.
    LOST = "lost"


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.VALIDATING_FILES: frozenset({JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}),
    # queued -> failed covers a job that cannot be enqueued at all (e.g. the broker refuses it).
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PAUSED}),
    # running -> queued hands a job back for re-delivery to another worker.
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED, JobStatus.PAUSED}
    ),
    # paused -> queued is a resume.
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}
EVENT_LEVELS = frozenset({"info", "warn", "error"})
EVENT_TYPES = frozenset({"message", "metrics"})
_STATUS_MESSAGES = {
    JobStatus.QUEUED: "Files validated, job queued",
    JobStatus.RUNNING: "Fine-tuning job started",
    JobStatus.SUCCEEDED: "The job has successfully completed",
    JobStatus.FAILED: "The job failed",
    JobStatus.CANCELLED: "The job was cancelled",
    JobStatus.PAUSED: "The job was paused",
}
_RESUMED_MESSAGE = "The job was resumed and queued"


class InvalidTransition(ValueError):
    """A status change that the state machine forbids, or that lost a race with another process."""

    code = "invalid_transition"

    def __init__(self, job_id: str, current: str, requested: str) -> None:
        super().__init__(f"job {job_id} is {current}; it cannot become {requested}")
        self.job_id = job_id
        self.current = current
        self.requested = requested


def create_job(
    session: Session,
    *,
    model: str,
    training_file: str,
    validation_file: str | None = None,
    evaluation_file: str | None = None,
    spec: ResolvedJobSpec | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    metadata: dict[str, str] | None = None,
    integrations: list[Any] | None = None,
    project_id: str = DEFAULT_PROJECT,
) -> Job:
    """Insert a job in ``validating_files`` with its creation event, and flush it.

    The resolved ``spec`` is stored as ``job.method`` (its ``to_dict()``, what the worker trains with) and its
    OpenAI view as ``job.hyperparameters``; a job without one (tests of the state machine) stores neither.
    """
    job = Job(
        project_id=project_id,
        model=model,
        training_file=training_file,
        validation_file=validation_file,
        evaluation_file=evaluation_file,
        hyperparameters={} if spec is None else spec.openai_view(),
        method=None if spec is None else spec.to_dict(),
        suffix=suffix,
        seed=seed,
        metadata_=metadata,
        integrations=integrations or [],
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, "info", f"Created fine-tuning job: {job.id}")
    return job


def get_job(session: Session, job_id: str, project_id: str | None = None) -> Job | None:
    """Return the job, or None if it does not exist (or belongs to another project)."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or (project_id is not None and job.project_id != project_id):
        return None
    return job


def list_jobs(
    session: Session,
    *,
    project_id: str | None = None,
    after: str | None = None,
    limit: int = 20,
    metadata: Mapping[str, str] | None = None,
) -> Page[Job]:
    """Return jobs newest first, optionally of one project and carrying every ``metadata`` pair, starting
    after job id ``after``."""
    statement = select(Job)
    if project_id is not None:
        statement = statement.where(Job.project_id == project_id)
    for key, value in (metadata or {}).items():
        statement = statement.where(Job.metadata_[key].as_string() == value)
    return paginate(session, statement, Job.id, after=after, limit=limit)


def _status_values(status: JobStatus, error: dict[str, Any] | None, now: int) -> dict[str, Any]:
    values: dict[str, Any] = {"status": status.value}
    if status == JobStatus.RUNNING:
        values["started_at"] = func.coalesce(Job.started_at, now)
    elif status == JobStatus.QUEUED:
        values |= {"worker_id": None, "heartbeat_at": None}
    elif status == JobStatus.PAUSED:
        values |= {"worker_id": None, "heartbeat_at": None, "estimated_finish": None}
        values["pause_requested"] = False
    if status in TERMINAL_STATUSES:
        values["finished_at"] = now
    if status == JobStatus.FAILED:
        values["error"] = error
    return values


def _status_event(session: Session, job: Job, previous: JobStatus) -> None:
    status = JobStatus(job.status)
    message = _STATUS_MESSAGES[status]
    if previous == JobStatus.PAUSED and status == JobStatus.QUEUED:
        message = _RESUMED_MESSAGE
    if status == JobStatus.FAILED and job.error and job.error.get("message"):
        message = f"{message}: {job.error['message']}"
    level = "error" if status == JobStatus.FAILED else "info"
    add_event(session, job.id, level, message, data={"status": status.value})


def transition(session: Session, job: Job, new_status: str, error: dict[str, Any] | None = None) -> Job:
    """Move ``job`` to ``new_status`` if the state machine allows it and nobody moved it first.

    Entering ``running`` sets ``started_at`` (once); a terminal status sets ``finished_at``; ``failed``
    stores ``error`` (``{"code", "message", "param"}``); going back to ``queued`` drops the worker lease.
    An event records the change.

    Raises:
        InvalidTransition: If the change is not allowed from the job's current status, including when
            another process changed the status since ``job`` was loaded.
    """
    requested, current = JobStatus(new_status), JobStatus(job.status)
    if requested not in TRANSITIONS[current]:
        raise InvalidTransition(job.id, current, requested)
    statement = update(Job).where(Job.id == job.id, Job.status == current)
    result = session.execute(
        statement.values(**_status_values(requested, error, now_unix())),
        execution_options={"synchronize_session": False},
    )
    session.refresh(job)
    if result.rowcount != 1:
        raise InvalidTransition(job.id, job.status, requested)
    _status_event(session, job, current)
    return job


def claim_job(
    session: Session, job_id: str, worker_id: str, *, stale_after_s: float = 120.0, now: int | None = None
) -> Job | None:
    """Take a queued job for ``worker_id``, or a running one whose worker stopped heartbeating.

    The claim is one conditional UPDATE, so of several workers racing for a job exactly one gets it.
    A job with a pending cancellation is not claimed.

    Returns:
        The job, now ``running`` under ``worker_id`` with ``attempts`` counted, or None if it was not free.
    """
    now = now_unix() if now is None else now
    free = or_(
        Job.status == JobStatus.QUEUED,
        (Job.status == JobStatus.RUNNING)
        & or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < now - stale_after_s),
    )
    statement = update(Job).where(Job.id == job_id, Job.cancel_requested.is_(False), free)
    values = _status_values(JobStatus.RUNNING, None, now)
    values |= {"worker_id": worker_id, "heartbeat_at": now, "attempts": Job.attempts + 1}
    result = session.execute(statement.values(**values), execution_options={"synchronize_session": False})
    if result.rowcount != 1:
        return None
    job = session.get_one(Job, job_id, populate_existing=True)
    attempt = f" (attempt {job.attempts})" if job.attempts > 1 else ""
    message = f"{_STATUS_MESSAGES[JobStatus.RUNNING]}{attempt}"
    add_event(session, job_id, "info", message, data={"status": JobStatus.RUNNING.value})
    return job


def heartbeat(session: Session, job_id: str, worker_id: str, *, now: int | None = None) -> HeartbeatStatus:
    """Renew ``worker_id``'s lease on a running job and report whether it should go on.

    The UPDATE also takes the job's row for the rest of the transaction (a row lock on Postgres, the
    database's write lock on SQLite): until it commits, no one can claim the job, re-queue it or request its
    cancellation, so what the caller does in it under an OK answer is fenced by the lease.
    """
    now = now_unix() if now is None else now
    statement = update(Job).where(
        Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.RUNNING
    )
    result = session.execute(
        statement.values(heartbeat_at=now), execution_options={"synchronize_session": False}
    )
    if result.rowcount != 1:
        return HeartbeatStatus.LOST
    flags = session.execute(select(Job.cancel_requested, Job.pause_requested).where(Job.id == job_id)).one()
    return requested_stop(flags.cancel_requested, flags.pause_requested)


def requested_stop(cancel_requested: bool, pause_requested: bool) -> HeartbeatStatus:
    """What a running job's flags ask of its worker: a cancel wins over a pause."""
    if cancel_requested:
        return HeartbeatStatus.CANCEL_REQUESTED
    return HeartbeatStatus.PAUSE_REQUESTED if pause_requested else HeartbeatStatus.OK


def request_cancel(session: Session, job: Job) -> Job:
    """Ask for ``job`` to stop: a job not yet running is cancelled now, a running one by its worker.

    The flag is set only on a job that has not finished, in one conditional UPDATE: a worker marks a job
    succeeded in a transaction that first takes the job's row (``heartbeat``) and reads the flag, so either
    the cancel lands first and the worker ends the job ``cancelled``, or the job has finished and this raises.

    Raises:
        InvalidTransition: If the job already finished.
    """
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.not_in([status.value for status in TERMINAL_STATUSES]))
        .values(cancel_requested=True),
        execution_options={"synchronize_session": False},
    )
    session.refresh(job)
    if result.rowcount != 1:
        raise InvalidTransition(job.id, job.status, JobStatus.CANCELLED)
    idle = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.PAUSED)
    return act_on_request(session, job, idle, JobStatus.CANCELLED, "Cancellation requested")


def act_on_request(
    session: Session, job: Job, idle: tuple[JobStatus, ...], target: JobStatus, running_message: str
) -> Job:
    """Act on a request flag just set on ``job`` (a cancel or a pause).

    A job in an ``idle`` status (no worker holds it) moves to ``target`` now; a running one gets
    ``running_message`` as an event, and its worker acts on the flag.
    """
    if job.status in idle:
        try:
            return transition(session, job, target)
        except InvalidTransition:
            pass  # A worker claimed it meanwhile; the flag makes that worker act.
    if job.status == JobStatus.RUNNING:
        add_event(session, job.id, "info", running_message)
    return job


def stale_jobs(session: Session, *, stale_after_s: float = 120.0, now: int | None = None) -> list[Job]:
    """Return running jobs whose worker has not sent a heartbeat for ``stale_after_s`` seconds."""
    now = now_unix() if now is None else now
    statement = select(Job).where(
        Job.status == JobStatus.RUNNING,
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < now - stale_after_s),
    )
    return list(session.scalars(statement.order_by(Job.id)))


def add_event(
    session: Session,
    job_id: str,
    level: str,
    message: str,
    type: str = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    """Record an event of a job (``level``: info|warn|error, ``type``: message|metrics) and flush it.

    Raises:
        ValueError: If ``level`` or ``type`` is not one of the allowed values.
    """
    if level not in EVENT_LEVELS:
        raise ValueError(f"level must be one of {sorted(EVENT_LEVELS)}, got {level!r}")
    if type not in EVENT_TYPES:
        raise ValueError(f"type must be one of {sorted(EVENT_TYPES)}, got {type!r}")
    event = JobEvent(job_id=job_id, level=level, type=type, message=message, data=data)
    session.add(event)
    session.flush()
    return event


def list_events(
    session: Session, job_id: str, *, after: str | None = None, limit: int = 20
) -> Page[JobEvent]:
    """Return a job's events newest first, starting after event id ``after``."""
    statement = select(JobEvent).where(JobEvent.job_id == job_id)
    return paginate(session, statement, JobEvent.id, after=after, limit=limit)
