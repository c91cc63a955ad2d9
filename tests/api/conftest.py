"""A real app on a real database (SQLite and Postgres) with an in-memory broker, and upload helpers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from registry.artifacts import register_adapter
from registry.base_models import DEFAULT_MODEL_ID
from registry.db import session_scope
from registry.settings import Settings
from tests.process_helpers import free_port

CHAT_EXAMPLE = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
}


def jsonl(examples: list[dict[str, Any]]) -> bytes:
    """Examples as JSONL bytes."""
    return b"".join(json.dumps(example).encode() + b"\n" for example in examples)


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings rooted in a test folder; the broker is kombu's in-memory transport and auth is off unless
    overridden (tests/api/test_auth.py turns it on)."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "broker_url": "memory://",
        "auth": "off",
    }
    return Settings(**(values | overrides))


def record_adapter(settings: Settings, name: str, folder: Path, size_bytes: int, **fields: Any) -> None:
    """Register the adapter files in ``folder`` as model ``name``, as a worker does after training.

    ``fields`` are ``register_adapter``'s others (``job_id``, ``base_model``, ``sha256``, ``project_id``);
    unless given, the adapter has no job, applies to the default base model and has a stand-in digest.
    """
    values = {"job_id": None, "base_model": DEFAULT_MODEL_ID, "sha256": "0" * 64} | fields
    with session_scope(settings.database_url) as session:
        register_adapter(session, name=name, storage_path=str(folder), size_bytes=size_bytes, **values)


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on loopback in a thread (lifespan included); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings on a fresh database: every test using it runs on SQLite and on Postgres."""
    return make_settings(tmp_path / "data", database_url, max_upload_bytes=64 * 1024)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client of the app, started (migrations applied) and stopped around the test."""
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def db(settings: Settings) -> Iterator[Session]:
    """A session on the app's database, committed at the end of the test (use after ``client``)."""
    with session_scope(settings.database_url) as session:
        yield session


def upload(client: TestClient, content: bytes, filename: str = "train.jsonl", purpose: str = "fine-tune"):
    """POST a file to /v1/files and return the response."""
    files = {"file": (filename, content, "application/jsonl")}
    return client.post("/v1/files", files=files, data={"purpose": purpose})


def uploaded_file_id(client: TestClient, examples: int = 4) -> str:
    """Upload ``examples`` valid chat examples and return the file id."""
    response = upload(client, jsonl([CHAT_EXAMPLE] * examples))
    assert response.status_code == 200, response.text
    return response.json()["id"]


def create_job(client: TestClient, **body: Any):
    """POST a fine-tuning job on a freshly uploaded file unless ``training_file`` is given."""
    body.setdefault("model", "default")
    if "training_file" not in body:
        body["training_file"] = uploaded_file_id(client)
    return client.post("/v1/fine_tuning/jobs", json=body)


def assert_error(response: Any, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    """Check the OpenAI error envelope and return its ``error`` object."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    return error
