"""Limits with clear errors: examples per file (400), unfinished jobs per project (429, atomic under
concurrent creates on SQLite and Postgres), request bodies and list fields (413, 400), steps (400)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from registry.api_keys import create_api_key
from registry.db import session_scope
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, assert_error, jsonl, make_settings, served, upload

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


@pytest.fixture
def live_settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url, max_concurrent_jobs_per_project=2)


@pytest.fixture
def live_url(live_settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on loopback, so that requests really run at once (thread pool)."""
    with served(create_app(live_settings)) as url:
        yield url


def test_parallel_creates_never_pass_the_job_limit(live_url: str) -> None:
    file_id = httpx.post(
        f"{live_url}/v1/files",
        files={"file": ("t.jsonl", jsonl([CHAT_EXAMPLE] * 4))},
        data={"purpose": "fine-tune"},
    ).json()["id"]
    start = threading.Barrier(10)
    statuses: list[tuple[int, str | None]] = []

    def create() -> None:
        with httpx.Client(base_url=live_url, timeout=60) as http:
            start.wait()  # all ten requests leave together
            response = http.post("/v1/fine_tuning/jobs", json={"model": "default", "training_file": file_id})
        statuses.append((response.status_code, (response.json().get("error") or {}).get("code")))

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses, key=str) == [(200, None)] * 2 + [(429, "concurrent_job_limit")] * 8
    listed = httpx.get(f"{live_url}/v1/fine_tuning/jobs").json()["data"]
    assert [job["status"] for job in listed] == ["queued", "queued"]


def test_a_json_body_over_the_limit_is_refused_before_it_is_read(make_client: AppFactory) -> None:
    client = make_client(max_request_body_bytes=4096)
    file_id = upload(client, jsonl([CHAT_EXAMPLE] * 4)).json()["id"]  # uploads have their own limit
    padded = {"model": "default", "training_file": file_id, "suffix": "x", "metadata": {"k": "v" * 5000}}
    error = assert_error(client.post("/v1/fine_tuning/jobs", json=padded), 413, "request_too_large")
    assert "4096 bytes" in error["message"]
    chunked = client.post(
        "/v1/fine_tuning/jobs", content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert_error(chunked, 413, "request_too_large")
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


WANDB = "integrations.0.wandb"


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("integrations", [{"type": "wandb", "wandb": {"project": "p"}}] * 9, "integrations"),
        ("integrations", [{"type": "wandb", "wandb": {"project": "p" * 3000}}], f"{WANDB}.project"),
        ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata"),
        ("metadata", {"k" * 65: "v"}, "metadata"),
        ("metadata", {"k": "v" * 513}, "metadata"),
        ("suffix", "s" * 65, "suffix"),
    ],
)
def test_list_and_dict_fields_of_a_job_are_bounded(
    make_client: AppFactory, field: str, value: Any, param: str
) -> None:
    client = make_client()
    file_id = upload(client, jsonl([CHAT_EXAMPLE] * 4)).json()["id"]
    response = client.post(
        "/v1/fine_tuning/jobs", json={"model": "default", "training_file": file_id, field: value}
    )
    assert_error(response, 400, "invalid_value", param)
    assert len(response.content) < 2048
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_optimizer_steps_are_bounded_by_a_setting(make_client: AppFactory) -> None:
    client = make_client(max_steps_limit=100)
    file_id = upload(client, jsonl([CHAT_EXAMPLE] * 4)).json()["id"]

    def create(hyperparameters: dict[str, Any]):
        method = {"type": "diablo", "diablo": {"hyperparameters": hyperparameters}}
        return client.post(
            "/v1/fine_tuning/jobs", json={"model": "default", "training_file": file_id, "method": method}
        )

    error = assert_error(
        create({"max_steps": 101}), 400, "max_steps_too_large", "method.diablo.hyperparameters.max_steps"
    )
    assert "101" in error["message"] and "limit is 100" in error["message"]
    # 4 examples in batches of 1 for 50 epochs: 200 steps, more than the limit without max_steps.
    many = create({"n_epochs": 50, "batch_size": 1})
    assert_error(many, 400, "max_steps_too_large", "method.diablo.hyperparameters.n_epochs")
    assert create({"max_steps": 100}).status_code == 200
