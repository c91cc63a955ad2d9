"""``POST /v1/fine_tuning/jobs/estimate``: steps, tokens and duration before a job is created."""

from __future__ import annotations

from fastapi.testclient import TestClient

from diablo_core.models.catalog import DEFAULT_MODEL_ID
from registry.db import session_scope
from registry.settings import Settings
from registry.throughput import DEFAULT_TOKENS_PER_BYTE, DEFAULT_TOKENS_PER_SECOND, record_throughput
from tests.api.conftest import assert_error, uploaded_file_id

ESTIMATE = "/v1/fine_tuning/jobs/estimate"


def _body(file_id: str, **hyperparameters: object) -> dict[str, object]:
    method = {"type": "diablo", "diablo": {"hyperparameters": hyperparameters}}
    return {"model": "default", "training_file": file_id, "method": method}


def test_an_estimate_before_any_job_uses_the_defaults_and_creates_nothing(client: TestClient) -> None:
    file_id = uploaded_file_id(client, examples=8)
    size = client.get(f"/v1/files/{file_id}").json()["bytes"]
    response = client.post(ESTIMATE, json=_body(file_id, n_epochs=3, batch_size=4))
    assert response.status_code == 200, response.text
    estimate = response.json()
    assert estimate["object"] == "fine_tuning.job.estimate"
    assert (estimate["model"], estimate["num_examples"], estimate["total_steps"]) == (DEFAULT_MODEL_ID, 8, 6)
    assert (estimate["hyperparameters"]["n_epochs"], estimate["hyperparameters"]["batch_size"]) == (3, 4)
    assert estimate["estimated_tokens"] == round(size * DEFAULT_TOKENS_PER_BYTE * 3)
    assert estimate["tokens_per_second"] == DEFAULT_TOKENS_PER_SECOND
    assert (estimate["basis"], estimate["precision"]) == ("default", None)
    assert "default" in estimate["message"]
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_an_estimate_uses_the_measured_speed_of_the_model(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        record_throughput(session, DEFAULT_MODEL_ID, "bf16", 1000.0, 0.5)
    file_id = uploaded_file_id(client, examples=10)
    size = client.get(f"/v1/files/{file_id}").json()["bytes"]
    estimate = client.post(ESTIMATE, json=_body(file_id, n_epochs=2, batch_size=5)).json()
    assert (estimate["basis"], estimate["precision"], estimate["jobs_measured"]) == ("measured", "bf16", 1)
    assert estimate["estimated_tokens"] == round(size * 0.5 * 2)
    assert estimate["estimated_duration_seconds"] == -(-estimate["estimated_tokens"] // 1000)


def test_an_estimate_refuses_what_creating_would_refuse(client: TestClient) -> None:
    file_id = uploaded_file_id(client)
    assert_error(
        client.post(ESTIMATE, json={"model": "nope", "training_file": file_id}),
        400,
        "model_not_found",
        "model",
    )
    missing = {"model": "default", "training_file": "file-missing"}
    assert_error(client.post(ESTIMATE, json=missing), 400, "file_not_found", "training_file")


def test_an_explicit_precision_uses_only_its_own_measurement(client: TestClient, settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        record_throughput(session, DEFAULT_MODEL_ID, "bf16", 1000.0, 0.5)
    file_id = uploaded_file_id(client)
    assert client.post(ESTIMATE, json=_body(file_id, precision="bf16")).json()["basis"] == "measured"
    assert client.post(ESTIMATE, json=_body(file_id, precision="fp32")).json()["basis"] == "default"
