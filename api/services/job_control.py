"""Pausing and resuming jobs through the API: the 409s, idempotent retries, and re-sending a resumed job."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from api.services.idempotency import IdempotentRequest
from api.services.jobs import change_once
from registry.models import Job
from registry.pausing import request_pause, resume
from registry.queue import enqueue_training
from registry.settings import Settings

logger = logging.getLogger("api.jobs")
PAUSE_ROUTE = "POST /v1/fine_tuning/jobs/{id}/pause"
RESUME_ROUTE = "POST /v1/fine_tuning/jobs/{id}/resume"


def pause_job(session: Session, project: str, job_id: str, idempotency_key: str | None = None) -> Job:
    """Pause a queued job, or ask the worker of a running one to checkpoint and release it (committed).

    Raises:
        APIError: 404 for an unknown job; 409 ``job_not_pausable`` unless it is queued or running.
    """
    request = IdempotentRequest.of(project, idempotency_key, PAUSE_ROUTE, {"job_id": job_id})
    refusal = ("job_not_pausable", "Job {job_id} is {current}; only queued or running jobs can be paused")
    return change_once(session, project, request, job_id, request_pause, refusal)[0]


def resume_job(
    session: Session, settings: Settings, project: str, job_id: str, idempotency_key: str | None = None
) -> Job:
    """Queue a paused job again (committed), then send it to the workers.

    If the broker refuses, the job stays queued and the sweeper sends it again later.

    Raises:
        APIError: 404 for an unknown job; 409 ``job_not_resumable`` unless it is paused.
    """
    request = IdempotentRequest.of(project, idempotency_key, RESUME_ROUTE, {"job_id": job_id})
    refusal = ("job_not_resumable", "Job {job_id} is {current}; only paused jobs can be resumed")
    job, changed = change_once(session, project, request, job_id, resume, refusal)
    if not changed:
        return job
    try:
        enqueue_training(job.id, settings)
    except Exception:
        logger.exception("could not send resumed job %s; the sweeper sends it later", job.id)
    return job
