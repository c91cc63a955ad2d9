"""Graceful shutdown: a worker asked to stop checkpoints its job at the current step and hands it back.

Celery's warm shutdown (SIGTERM) waits for the running task, which for a training job can take hours, and a
SIGKILL after that loses every step since the last periodic checkpoint. So ``worker.celery_app`` calls
``request_stop`` on ``worker_shutting_down``, which Celery sends from the signal handler in the main process
while the solo pool's task still runs. The job's reporter (``worker.progress.JobReporter``) sees the flag
after the next optimizer step and stops training, which writes a resumable checkpoint of that step;
``hand_back_for_shutdown`` then returns the job to ``queued`` and sends it again once that is committed, so
another worker resumes from that step while this one exits.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from registry.jobs import InvalidTransition, JobStatus
from registry.lease import hand_back
from registry.queue import enqueue_training
from registry.settings import Settings
from registry.sweeper import Enqueue

logger = logging.getLogger(__name__)
_stopping = threading.Event()


def request_stop() -> None:
    """Ask the job running in this process to stop after its current step (safe in a signal handler)."""
    _stopping.set()


def stop_requested() -> bool:
    """True once this worker process was asked to shut down."""
    return _stopping.is_set()


def clear_stop() -> None:
    """Forget a stop request (tests run many jobs in one process)."""
    _stopping.clear()


def shutdown_message(step: int | None) -> str:
    """The event that tells a job's story when its worker shuts down (``step``: None before training)."""
    if step is None:
        return "Worker shutting down before training started; re-queued"
    return f"Worker shutting down; checkpointed at step {step}, re-queued"


def hand_back_for_shutdown(
    sessions: sessionmaker[Session],
    job_id: str,
    worker_id: str,
    step: int | None,
    settings: Settings,
    enqueue: Enqueue = enqueue_training,
) -> str | None:
    """Return a job this worker stopped for shutdown to ``queued``, then send it to the queue again.

    A job whose cancellation was requested meanwhile is cancelled instead: a cancel wins over a shutdown.
    If the message cannot be sent, the job stays queued and the sweeper sends it later.

    Args:
        sessions: Session factory of the registry.
        job_id: The job that stopped.
        worker_id: This worker's id in the job's lease; a job no longer under it is left alone.
        step: The step whose resumable checkpoint training wrote (None when training had not started).
        settings: Service settings (broker and queue).
        enqueue: Sends a job to the workers (``registry.queue.enqueue_training``).

    Returns:
        The job's status afterwards (``queued`` or ``cancelled``), or None if it was no longer ours.
    """
    with sessions.begin() as session:
        try:
            status = hand_back(session, job_id, worker_id, shutdown_message(step))
        except InvalidTransition as error:
            logger.warning("job %s changed status concurrently; leaving it %s", job_id, error.current)
            return error.current
    if status != JobStatus.QUEUED:
        return status
    _send_again(enqueue, job_id, settings)
    return JobStatus.QUEUED


def _send_again(enqueue: Enqueue, job_id: str, settings: Settings) -> None:
    try:
        enqueue(job_id, settings)
    except Exception:
        logger.exception("job %s: could not re-send it; the sweeper sends it once it has waited", job_id)
        return
    logger.info("job %s: handed back for shutdown and sent to the queue again", job_id)
