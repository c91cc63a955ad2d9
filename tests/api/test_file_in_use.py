"""Deleting a file that an unfinished job (validating, queued or running) trains on answers 409
``file_in_use`` and keeps the file; once the job has ended the file can be deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from registry.db import session_scope
from registry.jobs import JobStatus, claim_job, get_job, transition
from registry.settings import Settings
from tests.api.conftest import assert_error, create_job, uploaded_file_id


def _set_status(settings: Settings, job_id: str, status: JobStatus) -> None:
    with session_scope(settings.database_url) as session:
        job = get_job(session, job_id)
        assert job is not None
        if status == JobStatus.RUNNING:
            assert claim_job(session, job_id, "worker-1") is not None
        else:
            transition(session, job, status)


@pytest.mark.parametrize("role", ["training_file", "validation_file"])
def test_a_file_a_queued_or_running_job_uses_cannot_be_deleted(
    client: TestClient, settings: Settings, role: str
) -> None:
    used, other = uploaded_file_id(client), uploaded_file_id(client)
    body = {"training_file": used} if role == "training_file" else {"training_file": other, role: used}
    job = create_job(client, **body).json()
    assert job["status"] == "queued"
    stored = Path(settings.files_dir / f"{used}.jsonl")
    error = assert_error(client.delete(f"/v1/files/{used}"), 409, "file_in_use", "file_id")
    assert job["id"] in error["message"]
    _set_status(settings, job["id"], JobStatus.RUNNING)
    assert_error(client.delete(f"/v1/files/{used}"), 409, "file_in_use", "file_id")
    assert stored.is_file() and client.get(f"/v1/files/{used}").status_code == 200
    _set_status(settings, job["id"], JobStatus.SUCCEEDED)
    assert client.delete(f"/v1/files/{used}").json()["deleted"] is True
    assert not stored.exists()


def test_a_cancelled_job_frees_its_file_and_unused_files_delete(client: TestClient) -> None:
    used, unused = uploaded_file_id(client), uploaded_file_id(client)
    job = create_job(client, training_file=used).json()
    assert client.delete(f"/v1/files/{unused}").status_code == 200
    assert_error(client.delete(f"/v1/files/{used}"), 409, "file_in_use", "file_id")
    assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    assert client.delete(f"/v1/files/{used}").status_code == 200
