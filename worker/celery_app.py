"""The workers' Celery app: ``celery -A worker.celery_app:app worker --pool solo -Q diablo``.

Built from the same settings as the API's publishing client (``registry.queue.make_celery``), so both agree
on the broker and the queue. The database is migrated when a worker starts, and jobs left behind by dead
workers are recovered once it is ready (``registry.sweeper``). A warm shutdown (SIGTERM) stops the running
job at its next step with a checkpoint and hands it back to the queue (``worker.shutdown``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import setup_logging, worker_init, worker_ready, worker_shutting_down

from diablo_core.precision.hardware import apply_torch_threads
from registry.db import upgrade_database
from registry.logging_setup import configure_logging
from registry.queue import declare_queue, make_celery
from registry.settings import get_settings
from registry.sweeper import sweep_once
from worker.liveness import start_ticking
from worker.shutdown import request_stop

logger = logging.getLogger(__name__)

app = make_celery(get_settings())
app.conf.update(include=["worker.tasks"])


@setup_logging.connect
def use_service_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Log like the API (``settings.log_format``, JSON by default) instead of Celery's own format."""
    configure_logging(get_settings().log_format, loglevel or "INFO")


@worker_init.connect
def migrate_database(**_: Any) -> None:
    """Migrate the registry and create the queue before the first task (safe when many workers start)."""
    settings = get_settings()
    threads = apply_torch_threads(settings.torch_threads)  # the solo pool trains in this process
    logger.info("training with %d torch threads", threads)
    upgrade_database(settings.database_url)
    declare_queue(app, settings.queue_name)
    logger.info("registry migrated; consuming queue %s", settings.queue_name)


@worker_ready.connect
def recover_abandoned_jobs(**_: Any) -> None:
    """Re-queue jobs whose worker died (this one's previous life included) once this worker consumes; from
    then on, tick the file the container's healthcheck reads (``worker.liveness``)."""
    settings = get_settings()
    sweep_once(settings)
    start_ticking(settings.worker_alive_file, settings.heartbeat_interval_s)


@worker_shutting_down.connect
def stop_running_job(**_: Any) -> None:
    """Make the running job checkpoint and hand itself back at its next step instead of finishing.

    Celery sends this from its signal handler in the main process while the solo pool's task still runs,
    so the receiver only sets a flag.
    """
    request_stop()
