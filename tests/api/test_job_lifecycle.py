"""Jobs after creation: listing with pagination, cancelling, events, checkpoints and progress."""

from __future__ import annotations

from fastapi.testclient import TestClient

from registry.artifacts import add_checkpoint
from registry.db import session_scope
from registry.jobs import add_event, claim_job, transition
from registry.models import Job
from registry.settings import Settings
from tests.api.conftest import assert_error, create_job, uploaded_file_id

JOBS = "/v1/fine_tuning/jobs"


def _job_ids(client: TestClient, count: int) -> list[str]:
    file_id = uploaded_file_id(client)
    return [create_job(client, training_file=file_id).json()["id"] for _ in range(count)]


def test_list_newest_first_with_after_and_limit(client: TestClient) -> None:
    ids = _job_ids(client, 3)
    first = client.get(JOBS, params={"limit": 2}).json()
    assert first["object"] == "list"
    assert [job["id"] for job in first["data"]] == [ids[2], ids[1]]
    assert (first["has_more"], first["first_id"], first["last_id"]) == (True, ids[2], ids[1])
    rest = client.get(JOBS, params={"limit": 2, "after": first["last_id"]}).json()
    assert [job["id"] for job in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False
    assert len(client.get(JOBS).json()["data"]) == 3
    assert_error(client.get(JOBS, params={"limit": 0}), 400, "invalid_value", "limit")
    assert_error(client.get(JOBS, params={"limit": 101}), 400, "invalid_value", "limit")


def test_unknown_job_is_404_everywhere(client: TestClient) -> None:
    for path in ("", "/cancel", "/events", "/checkpoints"):
        method = client.post if path == "/cancel" else client.get
        error = assert_error(method(f"{JOBS}/ftjob-missing{path}"), 404, "not_found")
        assert "ftjob-missing" in error["message"]


def test_cancel_queued_job_at_once_then_409(client: TestClient) -> None:
    [job_id] = _job_ids(client, 1)
    cancelled = client.post(f"{JOBS}/{job_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert client.get(f"{JOBS}/{job_id}").json()["status"] == "cancelled"
    again = assert_error(client.post(f"{JOBS}/{job_id}/cancel"), 409, "job_not_cancellable")
    assert "cancelled" in again["message"]


def test_cancel_running_job_asks_the_worker(client: TestClient, settings: Settings) -> None:
    [job_id] = _job_ids(client, 1)
    with session_scope(settings.database_url) as session:
        assert claim_job(session, job_id, "worker-1") is not None
    response = client.post(f"{JOBS}/{job_id}/cancel").json()
    assert response["status"] == "running"
    with session_scope(settings.database_url) as session:
        job = session.get_one(Job, job_id)
        assert job.cancel_requested is True
        transition(session, job, "cancelled")
    messages = [event["message"] for event in client.get(f"{JOBS}/{job_id}/events").json()["data"]]
    assert messages[:2] == ["The job was cancelled", "Cancellation requested"]
    assert client.get(f"{JOBS}/{job_id}").json()["status"] == "cancelled"


def test_events_newest_first_and_progress(client: TestClient, settings: Settings) -> None:
    [job_id] = _job_ids(client, 1)
    with session_scope(settings.database_url) as session:
        claim_job(session, job_id, "worker-1", now=1_000)
        for step in (1, 2):
            data = {"step": step, "total_steps": 8, "train_loss": 2.0 / step, "learning_rate": 1e-4}
            event = add_event(session, job_id, "info", f"Step {step}/8", type="metrics", data=data)
            event.created_at = 1_000 + 50 * step
    page = client.get(f"{JOBS}/{job_id}/events", params={"limit": 2}).json()
    assert [event["message"] for event in page["data"]] == ["Step 2/8", "Step 1/8"]
    assert page["has_more"] is True
    newest = page["data"][0]
    assert newest["object"] == "fine_tuning.job.event"
    assert (newest["type"], newest["level"], newest["data"]["step"]) == ("metrics", "info", 2)
    rest = client.get(f"{JOBS}/{job_id}/events", params={"after": page["last_id"]}).json()
    assert [event["type"] for event in rest["data"]] == ["message"] * len(rest["data"])
    assert rest["data"][-1]["message"].startswith("Created fine-tuning job")
    job = client.get(f"{JOBS}/{job_id}").json()
    assert job["progress"] == {"step": 2, "total_steps": 8, "percent": 25.0}
    assert job["started_at"] == 1_000
    # 2 steps took 100 s, so 8 take 400 s from the start.
    assert job["estimated_finish"] == 1_400
    assert client.get(JOBS).json()["data"][0]["progress"]["step"] == 2


def test_checkpoints_listed_newest_first(client: TestClient, settings: Settings) -> None:
    [job_id] = _job_ids(client, 1)
    with session_scope(settings.database_url) as session:
        for step in (10, 20, 30):
            metrics = {"step": step, "train_loss": 1.0 / step}
            add_checkpoint(session, job_id, step, f"ft:m::x:ckpt-step-{step}", metrics=metrics)
    page = client.get(f"{JOBS}/{job_id}/checkpoints", params={"limit": 2}).json()
    assert [c["step_number"] for c in page["data"]] == [30, 20]
    assert page["has_more"] is True
    newest = page["data"][0]
    assert newest["id"].startswith("ftckpt-")
    assert newest["object"] == "fine_tuning.job.checkpoint"
    assert newest["fine_tuning_job_id"] == job_id
    assert newest["fine_tuned_model_checkpoint"] == "ft:m::x:ckpt-step-30"
    assert newest["metrics"] == {"step": 30, "train_loss": 1.0 / 30}
    rest = client.get(f"{JOBS}/{job_id}/checkpoints", params={"after": page["last_id"]}).json()
    assert [c["step_number"] for c in rest["data"]] == [10]
    assert rest["has_more"] is False
