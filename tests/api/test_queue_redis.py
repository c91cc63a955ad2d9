"""Creating a job puts a ``diablo.train`` message for it on the real Redis queue, after the commit."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from registry.queue import TRAIN_TASK
from tests.api.conftest import create_job, make_settings

pytestmark = pytest.mark.integration
REDIS_URL = "redis://127.0.0.1:6379/15"


def test_job_creation_enqueues_the_training_task(tmp_path: Path, database_url: str) -> None:
    queue = f"test-api-{secrets.token_hex(4)}"
    settings = make_settings(tmp_path / "data", database_url, broker_url=REDIS_URL, queue_name=queue)
    broker = redis.Redis.from_url(REDIS_URL)
    try:
        with TestClient(create_app(settings)) as client:
            assert client.get("/readyz").json()["broker"] == "ok"
            job = create_job(client).json()
        assert job["status"] == "queued"
        raw = broker.lpop(queue)
        assert raw is not None, f"no message on queue {queue}"
        message = json.loads(raw)
        assert message["headers"]["task"] == TRAIN_TASK
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        assert args == [job["id"]]
        assert broker.llen(queue) == 0
    finally:
        broker.delete(queue)
        broker.close()
