"""Upload → job → worker → adapter registered → job succeeded, over HTTP on loopback (Postgres + Redis).

And a long job cancelled over HTTP stops within seconds and never runs again.
"""

from __future__ import annotations

import time
from pathlib import Path
from statistics import mean

import pytest

from registry.artifacts import get_adapter
from registry.db import session_scope
from registry.storage import file_sha256
from tests.e2e.client import TINY_MODEL
from tests.e2e.conftest import Service

pytestmark = [pytest.mark.integration, pytest.mark.slow]
JOB_TIMEOUT_S = 180.0
# A cancel is honoured after the current step: about a second on a loaded 2-core machine, far less idle.
# Running the 10,000 steps instead would take many minutes.
CANCEL_TIMEOUT_S = 30.0
TINY_RUN = {"max_steps": 12, "learning_rate": 1e-2, "batch_size": 8, "num_blocks": 4, "warmup_steps": 0}


def assert_adapter_on_disk(database_url: str, name: str) -> None:
    with session_scope(database_url) as session:
        adapter = get_adapter(session, name)
    assert adapter is not None
    weights = Path(adapter.storage_path) / "adapter_model.safetensors"
    assert (Path(adapter.storage_path) / "adapter_config.json").is_file()
    assert adapter.sha256 == file_sha256(weights) and adapter.size_bytes == weights.stat().st_size


def test_fine_tune_over_http_trains_and_registers_the_adapter(service: Service) -> None:
    with service.client() as client:
        file_id = client.upload_examples(32)
        created = client.create_job(file_id, dropout=0.0, checkpoint_every=4, **TINY_RUN)
        assert created["status"] == "queued" and created["model"] == TINY_MODEL
        job = client.wait_for_job(created["id"], JOB_TIMEOUT_S)
        assert (job["status"], job["error"]) == ("succeeded", None), service.output()
        history = client.events(job["id"])
        checkpoints = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
        models = [model["id"] for model in client.get("/v1/models").json()["data"]]
    losses = [event["data"]["train_loss"] for event in history if event["type"] == "metrics"]
    assert len(losses) == 12 and mean(losses[-3:]) < mean(losses[:3])
    assert any(event["message"].startswith("Using device cpu") for event in history)
    assert {4, 8, 12} <= {checkpoint["step_number"] for checkpoint in checkpoints}
    assert all(checkpoint["metrics"]["step"] == checkpoint["step_number"] for checkpoint in checkpoints)
    assert job["fine_tuned_model"] in models and TINY_MODEL in models
    assert job["trained_tokens"] > 0 and job["finished_at"] >= job["started_at"]
    assert_adapter_on_disk(service.env["DIABLO_DATABASE_URL"], job["fine_tuned_model"])


def test_cancelling_a_long_job_stops_it_within_seconds(service: Service) -> None:
    with service.client() as client:
        file_id = client.upload_examples(32)
        created = client.create_job(file_id, **(TINY_RUN | {"max_steps": 10_000}))
        client.wait_for_job(created["id"], JOB_TIMEOUT_S, until=("running",))
        while not any(event["type"] == "metrics" for event in client.events(created["id"])):
            time.sleep(0.2)  # training has started: the cancel must stop an optimizer loop
        asked = time.monotonic()
        response = client.post(f"/v1/fine_tuning/jobs/{created['id']}/cancel")
        assert response.status_code == 200, response.text
        job = client.wait_for_job(created["id"], CANCEL_TIMEOUT_S)
        took = time.monotonic() - asked
        later = []
        for _ in range(10):
            time.sleep(0.2)
            later.append(client.get(f"/v1/fine_tuning/jobs/{created['id']}").json()["status"])
        messages = [event["message"] for event in client.events(created["id"])]
    assert job["status"] == "cancelled" and took < CANCEL_TIMEOUT_S
    assert job["progress"]["step"] < 10_000 and job["fine_tuned_model"] is None
    assert set(later) == {"cancelled"}
    assert messages.index("Cancellation requested") < messages.index("The job was cancelled")
