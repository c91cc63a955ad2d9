"""Limits with clear errors: examples per file (400) and unfinished jobs per project (429)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from registry.api_keys import create_api_key
from registry.db import session_scope
from tests.api.conftest import CHAT_EXAMPLE, assert_error, jsonl, make_settings, upload

AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path, sqlite_url: str) -> Iterator[AppFactory]:
    """Start the app with the given setting overrides (one app per test)."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = make_settings(tmp_path / "data", sqlite_url, **overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_a_file_with_too_many_examples_is_refused(make_client: AppFactory) -> None:
    client = make_client(max_examples_per_file=3)
    assert upload(client, jsonl([CHAT_EXAMPLE] * 3)).status_code == 200
    error = assert_error(upload(client, jsonl([CHAT_EXAMPLE] * 4)), 400, "too_many_examples", "file")
    assert "4 examples" in error["message"] and "limit is 3" in error["message"]


def _create(client: TestClient, file_id: str, headers: dict[str, str] | None = None):
    body = {"model": "default", "training_file": file_id}
    return client.post("/v1/fine_tuning/jobs", json=body, headers=headers or {})


def test_unfinished_jobs_per_project_are_limited(make_client: AppFactory) -> None:
    client = make_client(max_concurrent_jobs_per_project=2)
    file_id = upload(client, jsonl([CHAT_EXAMPLE] * 4)).json()["id"]
    first, _ = _create(client, file_id).json(), _create(client, file_id).json()
    refused = _create(client, file_id)
    error = assert_error(refused, 429, "concurrent_job_limit")
    assert error["type"] == "rate_limit_exceeded" and "limit is 2" in error["message"]
    assert len(client.get("/v1/fine_tuning/jobs").json()["data"]) == 2
    assert client.post(f"/v1/fine_tuning/jobs/{first['id']}/cancel").status_code == 200
    assert _create(client, file_id).status_code == 200  # a cancelled job no longer counts


def test_the_job_limit_is_per_project_and_the_openai_client_sees_a_rate_limit(
    make_client: AppFactory,
) -> None:
    client = make_client(auth="on", max_concurrent_jobs_per_project=1)
    with session_scope(client.app.state.settings.database_url) as session:
        keys = {project: create_api_key(session, project)[1] for project in ("alpha", "beta")}
    sdk = {
        name: openai.OpenAI(api_key=key, base_url="http://testserver/v1", http_client=client, max_retries=0)
        for name, key in keys.items()
    }
    files = {name: sdk[name].files.create(file=("t.jsonl", jsonl([CHAT_EXAMPLE] * 4)), purpose="fine-tune").id
             for name in sdk}  # fmt: skip
    sdk["alpha"].fine_tuning.jobs.create(model="default", training_file=files["alpha"])
    with pytest.raises(openai.RateLimitError, match="unfinished fine-tuning jobs"):
        sdk["alpha"].fine_tuning.jobs.create(model="default", training_file=files["alpha"])
    assert (
        sdk["beta"].fine_tuning.jobs.create(model="default", training_file=files["beta"]).status == "queued"
    )
