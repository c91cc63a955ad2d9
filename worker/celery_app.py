"""The workers' Celery app: ``celery -A worker.celery_app:app worker --pool solo -Q diablo``.

Built from the same settings as the API's publishing client (``registry.queue.make_celery``), so both agree
on the broker and the queue. The database is migrated when a worker starts, and jobs left behind by dead
workers are recovered once it is ready (``registry.sweeper``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import setup_logging, worker_init, worker_ready

from registry.db import upgrade_database
from registry.logging_setup import configure_logging
from registry.queue import declare_queue, make_celery
from registry.settings import get_settings
from registry.sweeper import sweep_once

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
    upgrade_database(settings.database_url)
    declare_queue(app, settings.queue_name)
    logger.info("registry migrated; consuming queue %s", settings.queue_name)


@worker_ready.connect
def recover_abandoned_jobs(**_: Any) -> None:
    """Re-queue jobs whose worker died (this one's previous life included) once this worker consumes."""
    sweep_once(get_settings())
