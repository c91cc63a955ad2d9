"""The job queue: a Celery client built from the settings, shared by the API (publisher) and the workers.

Jobs are sent by task name, so the API never imports the worker (nor torch). The registry, not Celery,
holds every outcome: results are ignored unless a result backend is configured.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import SQLAlchemyError

from registry.db import sqlite_path
from registry.settings import Settings

TRAIN_TASK = "diablo.train"
QUEUE = "diablo"
SQLALCHEMY_PREFIXES = ("sqla+", "sqlalchemy+")
# Redis re-delivers a message that stays unacknowledged this long. Training runs longer than that produce
# a duplicate delivery, which is harmless: the duplicate's claim_job fails while the first worker's heartbeat
# is fresh, so it acknowledges and returns. A dead worker's job is re-delivered after this timeout and
# claimed once its heartbeat is stale.
REDIS_VISIBILITY_TIMEOUT_S = 600
# Publishing retries briefly, so that a request against a down broker fails in seconds, not minutes.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
BROKER_CONNECT_TIMEOUT_S = 3.0

_apps: dict[tuple[str, str | None, str], Celery] = {}
_apps_lock = threading.Lock()


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached, so a job could not be enqueued."""

    code = "broker_unavailable"


def broker_file(broker_url: str) -> Path | None:
    """Return the SQLite file behind a ``sqla+sqlite:///`` broker URL, or None for other brokers."""
    for prefix in SQLALCHEMY_PREFIXES:
        if broker_url.startswith(prefix):
            return sqlite_path(broker_url[len(prefix) :])
    return None


def _transport_options(broker_url: str) -> dict[str, Any]:
    if broker_url.startswith(("redis://", "rediss://")):
        return {
            "visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S,
        }
    if broker_file(broker_url) is not None:
        # Handed to sqlalchemy.create_engine by kombu: wait for SQLite's write lock instead of failing.
        return {"connect_args": {"timeout": 30}}
    return {}


def make_celery(settings: Settings) -> Celery:
    """Build a Celery app for ``settings``: late acks, one message per worker, re-delivery on worker loss.

    The default broker is kombu's SQLAlchemy transport on ``<data_dir>/broker.db`` (its folder is created
    here), which needs no server; a ``redis://`` URL uses Redis.
    """
    path = broker_file(settings.broker_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    app = Celery("diablo", broker=settings.broker_url, backend=settings.result_backend)
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        task_ignore_result=settings.result_backend is None,
        task_default_queue=settings.queue_name,
        task_routes={TRAIN_TASK: {"queue": settings.queue_name}},
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=BROKER_CONNECT_TIMEOUT_S,
        broker_transport_options=_transport_options(settings.broker_url),
    )
    return app


def declare_queue(app: Celery, queue: str, attempts: int = 5) -> None:
    """Create the queue on a SQLAlchemy broker before first use; other brokers need nothing.

    kombu's SQLAlchemy transport creates its tables and the queue row on first use with a check-then-insert,
    so a worker and the API that start on a fresh ``broker.db`` together can collide (a unique-constraint or
    "table exists" error). Each attempt uses a fresh connection, so a collision is simply retried.
    """
    if broker_file(str(app.conf.broker_url)) is None:
        return
    for attempt in range(attempts):
        try:
            with app.connection_for_write() as connection:
                connection.default_channel.queue_declare(queue=queue)
            return
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def _client(settings: Settings) -> Celery:
    """Return one publishing app per (broker, backend, queue), so connections are pooled across calls."""
    key = (settings.broker_url, settings.result_backend, settings.queue_name)
    with _apps_lock:
        if key not in _apps:
            app = make_celery(settings)
            declare_queue(app, settings.queue_name)
            _apps[key] = app
        return _apps[key]


def enqueue_training(job_id: str, settings: Settings) -> str:
    """Send ``diablo.train(job_id)`` to the job queue; call it only after the job's row is committed.

    Returns:
        The Celery task id.

    Raises:
        BrokerUnavailable: If the broker cannot be reached after a short retry.
    """
    try:
        result = _client(settings).send_task(
            TRAIN_TASK,
            args=[job_id],
            queue=settings.queue_name,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
        )
    except (KombuOperationalError, OSError, SQLAlchemyError) as exc:
        raise BrokerUnavailable(f"could not enqueue job {job_id}: {exc}") from exc
    return str(result.id)


def check_broker(settings: Settings) -> None:
    """Open and close one broker connection (for readiness checks).

    Raises:
        BrokerUnavailable: If the broker cannot be reached.
    """
    try:
        with _client(settings).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_CONNECT_TIMEOUT_S)
    except (KombuOperationalError, OSError, SQLAlchemyError) as exc:
        raise BrokerUnavailable(f"broker unreachable: {exc}") from exc
