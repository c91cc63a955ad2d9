"""The service as a user meets it: a real API (uvicorn) and real Celery workers on Postgres and Redis.

``service`` starts the API on a free loopback port and one worker, both configured only through
``DIABLO_*`` variables, with a tiny Llama checkpoint installed as the local base model ``tiny-llama``.
``service.client()`` drives the API over HTTP (``tests.e2e.client``), as any client would.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from diablo_cli.serve import api_command
from registry.api_keys import create_api_key
from registry.db import session_scope
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer
from tests.e2e.client import TINY_MODEL, ServiceClient
from tests.process_helpers import converted_models_dir, free_port, kill_group, start_logged, wait_for_http
from tests.worker.worker_process import start_worker, stop_worker

REDIS_URL = "redis://127.0.0.1:6379/0"
# Only bounds a hang: importing torch and transformers alone takes 15 s on a loaded 2-core machine.
STARTUP_TIMEOUT_S = 180.0


def install_tiny_model(models_dir: Path) -> Path:
    """Save a tiny random Llama and its byte-level tokenizer as ``<models_dir>/tiny-llama``."""
    directory = models_dir / TINY_MODEL
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def new_api_key(database_url: str, project: str = "e2e") -> str:
    """A fresh API key of ``project`` in the (migrated) registry; returns its secret."""
    with session_scope(database_url) as session:
        return create_api_key(session, project)[1]


@dataclass
class Service:
    """An API process and its workers sharing one environment; ``logs`` holds every process's output."""

    env: dict[str, str]
    logs: Path
    base_url: str = ""
    api_key: str = ""
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_api(self) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DIABLO_")} | self.env
        self.api = start_logged(api_command("127.0.0.1", port), full_env, self.logs / "api.log")
        wait_for_http(f"{self.base_url}/healthz", timeout_s=STARTUP_TIMEOUT_S)
        self.api_key = new_api_key(self.env["DIABLO_DATABASE_URL"])

    def client(self) -> ServiceClient:
        return ServiceClient(self.base_url, self.api_key, self.output)

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker{len(self.workers) + 1}.log"
        self.workers.append(start_worker(self.env, self.env["DIABLO_QUEUE_NAME"], log))
        return self.workers[-1]

    def stop(self) -> None:
        for worker in self.workers:
            stop_worker(worker, timeout=30)
        if self.api is not None:
            kill_group(self.api)

    def output(self) -> str:
        """The tail of every log, for assertion messages."""
        logs = sorted(self.logs.glob("*.log"))
        return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in logs)


@pytest.fixture(scope="session")
def converted_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model converted once per session (shared with the ops tests' fixture of that name)."""
    return converted_models_dir(tmp_path_factory)


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A Redis queue of this test alone, deleted afterwards."""
    name = f"diablo-test-{secrets.token_hex(6)}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(name, f"_kombu.binding.{name}")
    client.close()


@pytest.fixture
def service_env(postgres_url: str, queue_name: str, tmp_path: Path) -> dict[str, str]:
    """Postgres, Redis, a fresh data dir holding ``tiny-llama``, CPU, a heartbeat every second."""
    data_dir = tmp_path / "data"
    install_tiny_model(data_dir / "models")
    return {
        "DIABLO_DATA_DIR": str(data_dir),
        "DIABLO_DATABASE_URL": postgres_url,
        "DIABLO_BROKER_URL": REDIS_URL,
        "DIABLO_QUEUE_NAME": queue_name,
        "DIABLO_DEVICE": "cpu",
        "DIABLO_HEARTBEAT_INTERVAL_S": "1",
        "DIABLO_HEARTBEAT_TIMEOUT_S": "30",
        "HF_HUB_OFFLINE": "1",  # nothing may come from the hub: a wrong model name fails at once
    }


@contextlib.contextmanager
def running_service(env: dict[str, str], logs: Path) -> Iterator[Service]:
    """The API and one worker, stopped (the worker warmly) when the block ends."""
    running = Service(env, logs)
    try:
        running.start_api()
        running.start_worker()
        yield running
    finally:
        running.stop()


@pytest.fixture
def service(service_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    """The API and one worker, until the test ends."""
    with running_service(service_env, tmp_path) as running:
        yield running
