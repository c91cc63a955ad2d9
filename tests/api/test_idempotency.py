"""Idempotency-Key on every POST route: a retry returns the same object and never creates a second one; the
same key with another body is a 409; keys belong to a project."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.main import create_app
from api.services.idempotency import IdempotentRequest, commit_once
from registry.api_keys import create_api_key
from registry.db import session_scope, upgrade_database
from registry.ids import FILE_PREFIX, new_id
from registry.models import File, IdempotencyKey, Job
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, assert_error, jsonl, make_settings, upload

FILE_BYTES = jsonl([CHAT_EXAMPLE] * 4)


def _key(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def _upload(client: TestClient, key: str, content: bytes = FILE_BYTES, filename: str = "train.jsonl"):
    files = {"file": (filename, content, "application/jsonl")}
    return client.post("/v1/files", files=files, data={"purpose": "fine-tune"}, headers=_key(key))


def _count(settings: Settings, table: type) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def test_a_retried_upload_returns_the_same_file_and_stores_it_once(
    client: TestClient, settings: Settings
) -> None:
    first = _upload(client, "upload-1")
    again = _upload(client, "upload-1")
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert _count(settings, File) == 1
    assert sorted(path.name for path in settings.files_dir.iterdir()) == [f"{first.json()['id']}.jsonl"]


@pytest.mark.parametrize(
    "change", [{"content": FILE_BYTES + FILE_BYTES[:10] + b"\n"}, {"filename": "other.jsonl"}]
)
def test_the_same_upload_key_with_another_body_is_a_conflict(client: TestClient, change: dict) -> None:
    assert _upload(client, "upload-1").status_code == 200
    assert_error(_upload(client, "upload-1", **change), 409, "idempotency_key_reused", "Idempotency-Key")


def test_without_a_key_or_with_a_new_key_uploads_are_new_files(
    client: TestClient, settings: Settings
) -> None:
    ids = {upload(client, FILE_BYTES).json()["id"], upload(client, FILE_BYTES).json()["id"]}
    ids.add(_upload(client, "upload-2").json()["id"])
    assert len(ids) == 3 and _count(settings, File) == 3


def test_a_retried_job_creation_never_creates_a_second_job(client: TestClient, settings: Settings) -> None:
    file_id = upload(client, FILE_BYTES).json()["id"]
    body = {"model": "default", "training_file": file_id}
    ids = {
        client.post("/v1/fine_tuning/jobs", json=body, headers=_key("job-1")).json()["id"] for _ in range(3)
    }
    assert len(ids) == 1 and _count(settings, Job) == 1
    other = client.post("/v1/fine_tuning/jobs", json=body | {"suffix": "x"}, headers=_key("job-1"))
    assert_error(other, 409, "idempotency_key_reused", "Idempotency-Key")


def test_a_key_used_on_another_route_is_a_conflict(client: TestClient) -> None:
    file_id = _upload(client, "shared").json()["id"]
    response = client.post(
        "/v1/fine_tuning/jobs", json={"model": "default", "training_file": file_id}, headers=_key("shared")
    )
    assert_error(response, 409, "idempotency_key_reused", "Idempotency-Key")


def test_a_retried_cancel_answers_the_job_instead_of_a_conflict(client: TestClient) -> None:
    file_id = upload(client, FILE_BYTES).json()["id"]
    jobs = [client.post("/v1/fine_tuning/jobs", json={"model": "default", "training_file": file_id}).json()
            for _ in range(2)]  # fmt: skip
    cancel = f"/v1/fine_tuning/jobs/{jobs[0]['id']}/cancel"
    first = client.post(cancel, headers=_key("cancel-1"))
    again = client.post(cancel, headers=_key("cancel-1"))
    assert first.json()["status"] == again.json()["status"] == "cancelled" and again.status_code == 200
    assert_error(client.post(cancel), 409, "job_not_cancellable")  # without the key: a new request
    elsewhere = client.post(f"/v1/fine_tuning/jobs/{jobs[1]['id']}/cancel", headers=_key("cancel-1"))
    assert_error(elsewhere, 409, "idempotency_key_reused", "Idempotency-Key")
    assert client.get(f"/v1/fine_tuning/jobs/{jobs[1]['id']}").json()["status"] == "queued"


def test_a_concurrent_request_that_loses_the_race_answers_the_winners_object(settings: Settings) -> None:
    upgrade_database(settings.database_url)
    request = IdempotentRequest.of("default", "race", "POST /v1/files", {"sha256": "0" * 64})
    rows = [
        File(
            id=new_id(FILE_PREFIX),
            filename="t",
            purpose="fine-tune",
            bytes=1,
            sha256="0" * 64,
            storage_path="/",
        )
        for _ in "ab"
    ]
    with session_scope(settings.database_url) as first, session_scope(settings.database_url) as second:
        first.add(rows[0])
        assert commit_once(first, request, rows[0].id) is None
        second.add(rows[1])
        assert commit_once(second, request, rows[1].id) == rows[0].id
    assert _count(settings, File) == 1


@pytest.fixture
def projects_client(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = make_settings(tmp_path / "data", database_url, auth="on")
    with TestClient(create_app(settings)) as client:
        with session_scope(settings.database_url) as session:
            keys = {project: create_api_key(session, project)[1] for project in ("alpha", "beta")}
        yield client, keys


def test_keys_belong_to_a_project_and_the_openai_client_can_send_them(
    projects_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, keys = projects_client
    url = "http://testserver/v1"
    sdk = {name: openai.OpenAI(api_key=key, base_url=url, http_client=client, max_retries=0)
           for name, key in keys.items()}  # fmt: skip
    same = {"Idempotency-Key": "create-1"}
    alpha = [sdk["alpha"].files.create(file=("t.jsonl", FILE_BYTES), purpose="fine-tune", extra_headers=same)
             for _ in range(2)]  # fmt: skip
    beta = sdk["beta"].files.create(file=("t.jsonl", FILE_BYTES), purpose="fine-tune", extra_headers=same)
    assert alpha[0].id == alpha[1].id != beta.id
    with pytest.raises(openai.ConflictError):  # alpha used the key for an upload: another route
        sdk["alpha"].fine_tuning.jobs.create(model="default", training_file=alpha[0].id, extra_headers=same)
    retry = {"Idempotency-Key": "job-1"}
    create = sdk["alpha"].fine_tuning.jobs.create
    jobs = [create(model="default", training_file=alpha[0].id, extra_headers=retry) for _ in range(2)]
    assert jobs[0].id == jobs[1].id
    assert [job.id for job in sdk["alpha"].fine_tuning.jobs.list()] == [jobs[0].id]
    stranger = openai.OpenAI(api_key="sk-diablo-nope", base_url=url, http_client=client, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.files.list()


def _age_keys(settings: Settings, seconds: int) -> None:
    with session_scope(settings.database_url) as session:
        session.execute(update(IdempotencyKey).values(created_at=IdempotencyKey.created_at - seconds))


def test_an_expired_key_is_new_and_its_old_row_is_purged(client: TestClient, settings: Settings) -> None:
    first = _upload(client, "upload-1").json()["id"]
    _age_keys(settings, settings.idempotency_ttl_s - 5)
    assert _upload(client, "upload-1").json()["id"] == first  # still within its time to live
    _age_keys(settings, 10)
    again = _upload(client, "upload-1")
    assert again.status_code == 200, again.text
    assert again.json()["id"] != first
    _age_keys(settings, settings.idempotency_ttl_s + 1)
    other_body = _upload(client, "upload-1", filename="other.jsonl")  # would be a 409 while remembered
    assert other_body.status_code == 200, other_body.text
    assert _count(settings, IdempotencyKey) == 1
    assert _count(settings, File) == 3
