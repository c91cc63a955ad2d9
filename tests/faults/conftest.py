"""Fault injection: a Redis server of the test's own (so it can be killed without disturbing the shared one
on 6379) and the service's environment around it, with a tiny local base model."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import REDIS_URL, install_tiny_model
from tests.process_helpers import free_port, kill_group, start_logged

REDIS_STARTUP_TIMEOUT_S = 10.0


@dataclass
class RedisServer:
    """A ``redis-server`` without persistence on a free loopback port: restarting it empties it."""

    log: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (on the same port as before, if it ran already) and wait until it answers."""
        self.port = self.port or free_port()
        command = [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--daemonize", "no"),
        ]
        self.process = start_logged(command, {}, self.log)
        deadline = time.monotonic() + REDIS_STARTUP_TIMEOUT_S
        while True:
            with contextlib.suppress(redis.ConnectionError), self.client() as client:
                if client.ping():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"redis-server did not answer on port {self.port}:\n{self.log.read_text()}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server: every message it held is gone."""
        if self.process is not None:
            kill_group(self.process)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def fault_env(data_dir: Path, database_url: str, broker_url: str, **overrides: str) -> dict[str, str]:
    """The service's environment: Postgres, ``broker_url``, a unique queue, ``tiny-llama`` installed, CPU."""
    install_tiny_model(data_dir / "models")
    env = {
        "DIABLO_DATA_DIR": str(data_dir),
        "DIABLO_DATABASE_URL": database_url,
        "DIABLO_BROKER_URL": broker_url,
        "DIABLO_QUEUE_NAME": f"diablo-test-{secrets.token_hex(6)}",
        "DIABLO_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    return env | overrides


@pytest.fixture
def shared_redis_queue() -> Iterator[list[str]]:
    """Queue names used on the shared Redis; deleted when the test ends."""
    names: list[str] = []
    yield names
    client = redis.Redis.from_url(REDIS_URL)
    for name in names:
        client.delete(name, f"_kombu.binding.{name}")
    client.close()
