"""The workers' Celery app: ``celery -A worker.celery_app:app worker --pool solo -Q diablo``.

Built from the same settings as the API's publishing client (``registry.queue.make_celery``), so both agree
on the broker and the queue. The database is migrated when a worker starts.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init

from registry.db import upgrade_database
from registry.queue import declare_queue, make_celery
from registry.settings import get_settings

logger = logging.getLogger(__name__)

app = make_celery(get_settings())
app.conf.update(include=["worker.tasks"])


@worker_init.connect
def migrate_database(**_: Any) -> None:
    """Migrate the registry and create the queue before the first task (safe when many workers start)."""
    settings = get_settings()
    upgrade_database(settings.database_url)
    declare_queue(app, settings.queue_name)
    logger.info("registry migrated; consuming queue %s", settings.queue_name)
