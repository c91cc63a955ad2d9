"""The per-project storage quota: files plus adapters; uploads past it and jobs once it is full are refused
with 413 ``storage_quota_exceeded``, nothing is stored, and other projects are unaffected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from registry.api_keys import create_api_key
from registry.artifacts import register_adapter
from registry.base_models import DEFAULT_MODEL_ID
from registry.db import session_scope
from tests.api.conftest import CHAT_EXAMPLE, assert_error, jsonl, make_settings

FILE_BYTES = jsonl([CHAT_EXAMPLE] * 4)
QUOTA = 2 * len(FILE_BYTES) + 10  # room for two files, not three


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "data", database_url, auth="on", storage_quota_bytes_per_project=QUOTA
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _headers(client: TestClient, project: str) -> dict[str, str]:
    with session_scope(client.app.state.settings.database_url) as session:
        return {"Authorization": f"Bearer {create_api_key(session, project)[1]}"}


def _upload(client: TestClient, headers: dict[str, str]):
    files = {"file": ("t.jsonl", FILE_BYTES, "application/jsonl")}
    return client.post("/v1/files", files=files, data={"purpose": "fine-tune"}, headers=headers)


def test_uploads_past_the_quota_are_refused_and_store_nothing(client: TestClient) -> None:
    alpha, beta = _headers(client, "alpha"), _headers(client, "beta")
    first = _upload(client, alpha).json()["id"]
    assert _upload(client, alpha).status_code == 200
    error = assert_error(_upload(client, alpha), 413, "storage_quota_exceeded", "file")
    assert f"quota of {QUOTA} bytes" in error["message"]
    files_dir = client.app.state.settings.files_dir
    assert len(list(files_dir.iterdir())) == 2  # neither the refused file nor a temporary one stays
    assert len(client.get("/v1/files", headers=alpha).json()["data"]) == 2
    assert _upload(client, beta).status_code == 200  # the quota is per project
    assert client.delete(f"/v1/files/{first}", headers=alpha).status_code == 200
    assert _upload(client, alpha).status_code == 200  # deleting made room


def test_adapters_count_and_a_full_project_cannot_start_jobs(client: TestClient) -> None:
    alpha = _headers(client, "alpha")
    file_id = _upload(client, alpha).json()["id"]
    with session_scope(client.app.state.settings.database_url) as session:
        register_adapter(
            session,
            name=f"ft:{DEFAULT_MODEL_ID}::quota0001",
            job_id=None,
            base_model=DEFAULT_MODEL_ID,
            storage_path="/nonexistent",
            sha256="0" * 64,
            size_bytes=QUOTA - len(FILE_BYTES),  # files + adapters now fill the quota exactly
            project_id="alpha",
        )
    body = {"model": "default", "training_file": file_id}
    refused = client.post("/v1/fine_tuning/jobs", json=body, headers=alpha)
    assert_error(refused, 413, "storage_quota_exceeded", "training_file")
    assert_error(_upload(client, alpha), 413, "storage_quota_exceeded", "file")
    assert client.get("/v1/fine_tuning/jobs", headers=alpha).json()["data"] == []
    assert client.delete(f"/v1/models/ft:{DEFAULT_MODEL_ID}::quota0001", headers=alpha).status_code == 200
    assert client.post("/v1/fine_tuning/jobs", json=body, headers=alpha).json()["status"] == "queued"


def test_a_zero_quota_means_no_quota(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path / "data", sqlite_url, storage_quota_bytes_per_project=0)
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            assert _upload(client, {}).status_code == 200
