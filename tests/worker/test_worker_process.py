"""A real Celery worker process trains a queued job: Redis + Postgres, and the default SQLite broker."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from registry.artifacts import get_adapter
from registry.db import current_revision, get_sessionmaker, upgrade_database
from registry.jobs import get_job
from registry.queue import enqueue_training
from registry.settings import Settings
from registry.storage import file_sha256
from tests.worker.conftest import chat_example, jsonl, make_settings, queue_job
from tests.worker.worker_process import TERMINAL, start_worker, stop_worker, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REDIS_URL = "redis://127.0.0.1:6379/0"
JOB_TIMEOUT_S = 120.0
# Only bounds a hang: the worker imports torch first, which takes 15 s on a loaded 2-core machine.
STARTUP_TIMEOUT_S = 180.0


def worker_env(settings: Settings) -> dict[str, str]:
    shared = settings.as_environment("data_dir", "database_url", "broker_url", "queue_name")
    return {**shared, "DIABLO_DEVICE": "cpu", "DIABLO_CHECKPOINT_EVERY": "4"}


def status_of(sessions: sessionmaker[Session], job_id: str) -> str | None:
    with sessions() as session:
        status = get_job(session, job_id).status
    return status if status in TERMINAL else None


def assert_trained(sessions: sessionmaker[Session], job_id: str) -> None:
    with sessions() as session:
        job = get_job(session, job_id)
        assert (job.status, job.error, job.attempts) == ("succeeded", None, 1)
        adapter = get_adapter(session, job.fine_tuned_model)
    weights = Path(adapter.storage_path) / "adapter_model.safetensors"
    assert (Path(adapter.storage_path) / "adapter_config.json").is_file()
    assert adapter.sha256 == file_sha256(weights)


def run_job_through_worker(settings: Settings, tiny_model_dir: Path, log_path: Path, migrate: bool) -> None:
    """Start a worker, queue a job, wait for it to succeed, stop the worker; ``migrate``: the test does it."""
    if migrate:
        upgrade_database(settings.database_url)
    process = start_worker(worker_env(settings), settings.queue_name, log_path)
    try:
        # The worker migrates the registry when it starts; on an empty database that proves it did.
        wait_for(lambda: current_revision(settings.database_url), STARTUP_TIMEOUT_S, process, log_path)
        sessions = get_sessionmaker(settings.database_url)
        job_id = queue_job(sessions, settings, tiny_model_dir, jsonl([chat_example(i) for i in range(8)]))
        enqueue_training(job_id, settings)
        wait_for(lambda: status_of(sessions, job_id), JOB_TIMEOUT_S, process, log_path)
        assert_trained(sessions, job_id)
    finally:
        code = stop_worker(process)
    assert code == 0, log_path.read_text()[-3000:]


def test_worker_on_redis_and_postgres(postgres_url: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    queue = f"diablo-test-{secrets.token_hex(6)}"
    settings = make_settings(tmp_path / "data", postgres_url, broker_url=REDIS_URL, queue_name=queue)
    try:
        run_job_through_worker(settings, tiny_model_dir, tmp_path / "worker.log", migrate=True)
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()


def test_worker_on_the_default_sqlite_broker_and_registry(tmp_path: Path, tiny_model_dir: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, queue_name=f"diablo-test-{secrets.token_hex(6)}")
    assert settings.broker_url == f"sqla+sqlite:///{data_dir.resolve() / 'broker.db'}"
    run_job_through_worker(settings, tiny_model_dir, tmp_path / "worker.log", migrate=False)
