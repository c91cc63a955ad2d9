"""``POST /v1/fine_tuning/jobs/{id}/pause`` and ``/resume``: the state machine as the API shows it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from registry.db import session_scope
from registry.jobs import claim_job, transition
from registry.models import Job
from registry.settings import Settings
from tests.api.conftest import assert_error, create_job, make_settings, uploaded_file_id

JOBS = "/v1/fine_tuning/jobs"


def _job_id(client: TestClient) -> str:
    return create_job(client, training_file=uploaded_file_id(client)).json()["id"]


def _messages(client: TestClient, job_id: str) -> list[str]:
    return [event["message"] for event in client.get(f"{JOBS}/{job_id}/events").json()["data"]]


def test_pause_a_queued_job_then_resume_it(client: TestClient) -> None:
    job_id = _job_id(client)
    paused = client.post(f"{JOBS}/{job_id}/pause")
    assert paused.status_code == 200
    assert (paused.json()["status"], paused.json()["finished_at"]) == ("paused", None)
    assert client.get(JOBS).json()["data"][0]["status"] == "paused"
    error = assert_error(client.post(f"{JOBS}/{job_id}/pause"), 409, "job_not_pausable")
    assert error["message"] == f"Job {job_id} is paused; only queued or running jobs can be paused"
    assert client.post(f"{JOBS}/{job_id}/resume").json()["status"] == "queued"
    error = assert_error(client.post(f"{JOBS}/{job_id}/resume"), 409, "job_not_resumable")
    assert error["message"] == f"Job {job_id} is queued; only paused jobs can be resumed"
    assert _messages(client, job_id)[:2] == ["The job was resumed and queued", "The job was paused"]


def test_pause_a_running_job_asks_its_worker(client: TestClient, settings: Settings) -> None:
    job_id = _job_id(client)
    with session_scope(settings.database_url) as session:
        assert claim_job(session, job_id, "worker-1") is not None
    assert client.post(f"{JOBS}/{job_id}/pause").json()["status"] == "running"
    assert_error(client.post(f"{JOBS}/{job_id}/resume"), 409, "job_not_resumable")
    with session_scope(settings.database_url) as session:
        job = session.get_one(Job, job_id)
        assert job.pause_requested is True
        transition(session, job, "paused")  # the worker, once its checkpoint is written
    assert client.get(f"{JOBS}/{job_id}").json()["status"] == "paused"
    assert _messages(client, job_id)[:2] == [
        "The job was paused",
        "Pause requested; the job stops at its next step",
    ]


def test_finished_jobs_neither_pause_nor_resume(client: TestClient) -> None:
    job_id = _job_id(client)
    client.post(f"{JOBS}/{job_id}/cancel")
    assert_error(client.post(f"{JOBS}/{job_id}/pause"), 409, "job_not_pausable")
    assert_error(client.post(f"{JOBS}/{job_id}/resume"), 409, "job_not_resumable")
    for action in ("pause", "resume"):
        assert_error(client.post(f"{JOBS}/ftjob-missing/{action}"), 404, "not_found")


def test_a_paused_job_can_be_cancelled(client: TestClient) -> None:
    job_id = _job_id(client)
    client.post(f"{JOBS}/{job_id}/pause")
    cancelled = client.post(f"{JOBS}/{job_id}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None


def test_a_retried_pause_with_its_key_answers_the_job(client: TestClient) -> None:
    job_id = _job_id(client)
    headers = {"Idempotency-Key": "pause-once"}
    first = client.post(f"{JOBS}/{job_id}/pause", headers=headers)
    again = client.post(f"{JOBS}/{job_id}/pause", headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["status"] == "paused"


def test_a_paused_job_counts_towards_the_concurrent_limit(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url, max_concurrent_jobs_per_project=1)
    with TestClient(create_app(settings)) as limited:
        job_id = _job_id(limited)
        limited.post(f"{JOBS}/{job_id}/pause")
        second = create_job(limited, training_file=uploaded_file_id(limited))
        assert_error(second, 429, "concurrent_job_limit")
