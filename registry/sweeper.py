"""Recovering jobs that nobody works on: ``recover_stale_jobs``, run by workers and the API.

Two kinds of job are stuck without help:

- A ``running`` job whose worker died (kill -9, lost machine) stops heartbeating. Its lease is taken away
  with one conditional UPDATE (so a worker that comes back to life finds the job no longer its own), and the
  job goes back to ``queued`` and is sent again, or fails with ``worker_lost`` once it used up its attempts.
- A ``queued`` job whose broker message was lost (Redis restarted without persistence) waits forever. A
  queued job with no event for ``queued_after_s`` is sent again, and the event recorded says so, which also
  restarts its clock. A duplicate message is harmless: ``claim_job`` lets one worker take a job once.

Messages are sent only after the transaction that re-queued the job has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from registry.db import get_sessionmaker
from registry.jobs import JobStatus, add_event, get_job, stale_jobs
from registry.lease import release_stale_lease, settle_unfinished
from registry.models import Job, JobEvent, now_unix
from registry.queue import enqueue_training
from registry.settings import Settings

logger = logging.getLogger(__name__)
DEFAULT_MAX_ATTEMPTS = 3
# A queued job is sent again after this many heartbeat timeouts without news (600 s by default).
QUEUED_TIMEOUT_FACTOR = 5
Enqueue = Callable[[str, Settings], Any]


def recover_stale_jobs(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    queued_after_s: float | None = None,
    enqueue: Enqueue = enqueue_training,
    now: int | None = None,
) -> list[str]:
    """Re-queue (or fail) running jobs whose worker is gone, and re-send queued jobs nobody took.

    Args:
        sessions: Session factory of the registry.
        settings: Service settings; ``heartbeat_timeout_s`` says when a running job's worker counts as lost.
        max_attempts: A lost job that was started this many times fails with ``worker_lost`` instead.
        queued_after_s: Seconds a queued job may go without an event before it is sent again
            (default: ``QUEUED_TIMEOUT_FACTOR`` heartbeat timeouts).
        enqueue: Sends a job to the workers (``registry.queue.enqueue_training``).
        now: The current unix time (tests pass one).

    Returns:
        The ids of the jobs re-queued, failed or cancelled, then of those sent again, in that order.
    """
    now = now_unix() if now is None else now
    if queued_after_s is None:
        queued_after_s = settings.heartbeat_timeout_s * QUEUED_TIMEOUT_FACTOR
    with sessions() as session:
        lost = [job.id for job in stale_jobs(session, stale_after_s=settings.heartbeat_timeout_s, now=now)]
    cutoff = now - settings.heartbeat_timeout_s
    outcomes = {job_id: _settle_lost(sessions, job_id, cutoff, max_attempts) for job_id in lost}
    recovered = [job_id for job_id, status in outcomes.items() if status is not None]
    resend = [job_id for job_id, status in outcomes.items() if status == JobStatus.QUEUED]
    idle = _idle_queued(sessions, now - queued_after_s)
    idle = [job_id for job_id in idle if _note_resend(sessions, job_id)]
    for job_id in resend + idle:
        _send(enqueue, job_id, settings)
    return recovered + idle


def _settle_lost(
    sessions: sessionmaker[Session], job_id: str, cutoff: float, max_attempts: int
) -> JobStatus | None:
    """Take a dead worker's lease and decide the job's fate; None if its worker turned out to be alive."""
    with sessions.begin() as session:
        job = release_stale_lease(session, job_id, cutoff)
        if job is None:
            return None
        message = f"Worker lost; re-queued (attempt {job.attempts + 1})"
        status = settle_unfinished(session, job, message, level="warn", max_attempts=max_attempts)
        logger.warning("job %s: worker lost after attempt %d; now %s", job_id, job.attempts, status)
        return status


def _idle_queued(sessions: sessionmaker[Session], cutoff: float) -> list[str]:
    """Queued jobs (not being cancelled) whose newest event is older than ``cutoff``."""
    newest = select(func.max(JobEvent.created_at)).where(JobEvent.job_id == Job.id).scalar_subquery()
    statement = select(Job.id).where(
        Job.status == JobStatus.QUEUED,
        Job.cancel_requested.is_(False),
        func.coalesce(newest, Job.created_at) < cutoff,
    )
    with sessions() as session:
        return list(session.scalars(statement.order_by(Job.id)))


def _note_resend(sessions: sessionmaker[Session], job_id: str) -> bool:
    with sessions.begin() as session:
        job = get_job(session, job_id)
        if job is None or job.status != JobStatus.QUEUED:
            return False
        add_event(session, job_id, "warn", "No worker has taken the job yet; sent it to the queue again")
        return True


def _send(enqueue: Enqueue, job_id: str, settings: Settings) -> None:
    try:
        enqueue(job_id, settings)
    except Exception:
        # The job stays queued; the next sweep sends it again once its queued_after_s has passed.
        logger.exception("job %s: could not send it to the queue", job_id)


def sweep_once(settings: Settings) -> list[str]:
    """``recover_stale_jobs`` on the configured registry; logs and swallows any error (for hooks)."""
    try:
        recovered = recover_stale_jobs(get_sessionmaker(settings.database_url), settings)
    except Exception:
        logger.exception("sweeping stale jobs failed; retrying at the next sweep")
        return []
    if recovered:
        logger.info("recovered jobs: %s", ", ".join(recovered))
    return recovered


async def _sweep_forever(settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.sweep_interval_s)
        await asyncio.to_thread(sweep_once, settings)


@contextlib.asynccontextmanager
async def periodic_sweeps(settings: Settings) -> AsyncIterator[None]:
    """Run ``sweep_once`` every ``settings.sweep_interval_s`` seconds (0: never) while the block runs."""
    if settings.sweep_interval_s <= 0:
        yield
        return
    task = asyncio.create_task(_sweep_forever(settings), name="diablo-sweeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
