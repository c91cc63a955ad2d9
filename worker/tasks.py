"""Celery tasks: thin wrappers that hand a job to ``worker.training_job``."""

from __future__ import annotations

import os
import socket

from celery import Task
from celery.exceptions import Reject

from registry.logging_setup import log_context
from registry.queue import TRAIN_TASK
from registry.settings import get_settings
from worker.celery_app import app
from worker.shutdown import stop_requested
from worker.training_job import TRANSIENT_ERRORS, run_training_job

# Database outages are retried a few times; a user's bad data fails the job at once and is never retried.
MAX_RETRIES = 3


def worker_id(hostname: str | None) -> str:
    """This worker process's name in job leases: ``<celery hostname>:<pid>``."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


@app.task(name=TRAIN_TASK, bind=True, max_retries=MAX_RETRIES)
def train_job(self: Task, job_id: str) -> str | None:
    """Run fine-tuning job ``job_id``; returns its final status (None when it was not this worker's)."""
    if stop_requested():
        # Delivered after SIGTERM: back to the broker for another worker, not left for the sweeper.
        raise Reject("worker is shutting down", requeue=True)
    settings = get_settings()
    with log_context(job_id=job_id):  # every log line about this job carries its id
        try:
            return run_training_job(job_id, settings, worker_id(self.request.hostname))
        except TRANSIENT_ERRORS as error:
            # The job was handed back to "queued" if the database allowed it; otherwise its lease must expire
            # before a retry can claim it, so the retry waits that long.
            raise self.retry(exc=error, countdown=settings.heartbeat_timeout_s) from error
