"""POST /v1/fine_tuning/jobs with ``method.type: "dpo"``: beta resolved and stored, right-kind files."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import assert_error, create_job, jsonl, upload, uploaded_file_id
from tests.core.test_preferences import pair


def preference_file(client: TestClient, examples: int = 8) -> str:
    response = upload(client, jsonl([pair()] * examples))
    assert response.status_code == 200, response.text
    return response.json()["id"]


def dpo(**hyperparameters) -> dict:
    return {"method": {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}}


def test_dpo_job_stores_beta_with_the_diablo_settings(client: TestClient) -> None:
    response = create_job(client, training_file=preference_file(client), **dpo(beta=0.25, num_blocks=8))
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["method"]["type"] == "dpo"
    resolved = job["method"]["dpo"]["hyperparameters"]
    assert resolved["beta"] == 0.25 and resolved["num_blocks"] == 8 and resolved["batch_size"] == 8
    assert job["hyperparameters"] == {"n_epochs": 13, "batch_size": 8, "learning_rate_multiplier": 1.0}


def test_beta_auto_is_one_tenth(client: TestClient) -> None:
    job = create_job(client, training_file=preference_file(client), **dpo()).json()
    assert job["method"]["dpo"]["hyperparameters"]["beta"] == 0.1


def test_beta_out_of_range_is_refused(client: TestClient) -> None:
    response = create_job(client, training_file=preference_file(client), **dpo(beta=0))
    assert response.status_code == 400, response.text
    assert "beta" in (response.json()["error"]["param"] or "")


def test_a_chat_file_sent_to_a_dpo_job_is_refused_with_the_format_it_needs(client: TestClient) -> None:
    response = create_job(client, training_file=uploaded_file_id(client), **dpo())
    error = assert_error(response, 400, "invalid_file_format", "training_file")
    assert "is in chat format, but a dpo job needs preference pairs" in error["message"]
    assert '"preferred_output"' in error["message"]


def test_a_preference_file_sent_to_a_supervised_job_is_refused(client: TestClient) -> None:
    response = create_job(client, training_file=preference_file(client))
    error = assert_error(response, 400, "invalid_file_format", "training_file")
    assert "preference pairs train with method type 'dpo'" in error["message"]


def test_a_dpo_validation_file_must_hold_pairs_too(client: TestClient) -> None:
    body = dpo() | {"validation_file": uploaded_file_id(client)}
    response = create_job(client, training_file=preference_file(client), **body)
    assert_error(response, 400, "invalid_file_format", "validation_file")
