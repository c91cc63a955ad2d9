"""The service as a user meets it: a real API (uvicorn) and real Celery workers on Postgres and Redis.

``service`` starts the API on a free loopback port and one worker, both configured only through
``DIABLO_*`` variables, with a tiny Llama checkpoint installed as the local base model ``tiny-llama``.
Helpers below drive the API over HTTP with httpx, as any client would.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from diablo_cli.serve import api_command
from registry.api_keys import create_api_key
from registry.db import session_scope
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer
from tests.process_helpers import converted_models_dir, free_port, kill_group, start_logged, wait_for_http
from tests.worker.worker_process import start_worker, stop_worker

REDIS_URL = "redis://127.0.0.1:6379/0"
TINY_MODEL = "tiny-llama"
# Only bounds a hang: importing torch and transformers alone takes 15 s on a loaded 2-core machine.
STARTUP_TIMEOUT_S = 180.0
TERMINAL = ("succeeded", "failed", "cancelled")


def arithmetic_examples(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` chat examples "What is A + B?" -> "C" with one-digit numbers (a toy task that is learned
    within a few steps)."""
    pairs = [(a, b) for a in range(10) for b in range(10)]
    chosen = [pairs[(seed + 37 * index) % len(pairs)] for index in range(count)]
    return [
        {
            "messages": [
                {"role": "system", "content": "Reply with the number only."},
                {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": str(a + b)},
            ]
        }
        for a, b in chosen
    ]


def jsonl(examples: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(example) + "\n" for example in examples).encode()


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


def api_client(base_url: str, api_key: str) -> httpx.Client:
    """An HTTP client of the API that sends ``api_key`` as its bearer token."""
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)


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

    def client(self) -> httpx.Client:
        return api_client(self.base_url, self.api_key)

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


@pytest.fixture
def service(service_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    """The API and one worker, stopped (the worker warmly) when the test ends."""
    running = Service(service_env, tmp_path)
    try:
        running.start_api()
        running.start_worker()
        yield running
    finally:
        running.stop()


def upload(client: httpx.Client, content: bytes) -> str:
    """Upload a fine-tuning file; return its id."""
    files = {"file": ("train.jsonl", content, "application/jsonl")}
    response = client.post("/v1/files", files=files, data={"purpose": "fine-tune"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def create_job(client: httpx.Client, model: str, training_file: str, **diablo: Any) -> dict[str, Any]:
    """Create a DiaBlo job with the given method hyperparameters; return the job object."""
    method = {"type": "diablo", "diablo": {"hyperparameters": diablo}}
    body = {"model": model, "training_file": training_file, "method": method, "suffix": "e2e", "seed": 3}
    response = client.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_job(
    client: httpx.Client, job_id: str, until: tuple[str, ...], timeout_s: float, logs: Callable[[], str]
) -> dict[str, Any]:
    """Poll the job until its status is one of ``until``; fail with ``logs()`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {job['status']} after {timeout_s} s: {job}\n{logs()}")
        time.sleep(0.2)


def events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """All of a job's events, oldest first."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params = {"limit": 100} | ({"after": after} if after else {})
        page = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params=params).json()
        found.extend(page["data"])
        if not page["has_more"]:
            return list(reversed(found))
        after = page["last_id"]
