"""Fixtures for the process tests: the compose environment made local, and a converted default model."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.ops.compose_file import compose_service
from tests.process_helpers import converted_models_dir

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@pytest.fixture
def redis_db() -> Iterator[int]:
    """A Redis database index whose test keys are removed afterwards (every queue name is unique too)."""
    db = 8 + secrets.randbelow(8)
    yield db
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    for key in client.scan_iter(match="*diablo-test-*"):
        client.delete(key)
    client.close()


@pytest.fixture
def env(postgres_url: str, redis_db: int, tmp_path: Path) -> dict[str, str]:
    """The compose services' environment, every value replaced by its local equivalent."""
    local = {
        "DIABLO_DATA_DIR": str(tmp_path / "data"),
        "DIABLO_DATABASE_URL": postgres_url,
        "DIABLO_BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
        "DIABLO_QUEUE_NAME": f"diablo-test-{secrets.token_hex(4)}",
    }
    assert set(compose_service("api")["environment"]) == set(local)
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("DIABLO_")}
    return {**inherited, **local}


@pytest.fixture(scope="session")
def converted_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``models`` folder holding the default model, converted by the check that ``diablo serve`` runs."""
    return converted_models_dir(tmp_path_factory)
