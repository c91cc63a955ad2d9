"""Pausing a running job: its worker checkpoints and releases it; resumed, the job continues from there."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.client import ServiceClient
from tests.e2e.conftest import Service

pytestmark = [pytest.mark.integration, pytest.mark.slow]
JOB_TIMEOUT_S = 240.0
RUN = {"max_steps": 120, "learning_rate": 1e-2, "batch_size": 8, "num_blocks": 4, "warmup_steps": 0}
PAUSED = re.compile(r"Paused at step (\d+) with a checkpoint; resuming continues from that step")
RESUMED = re.compile(r"Resuming from step (\d+) \(checkpoint .*\)")


def wait_for_step(client: ServiceClient, job_id: str, step: int, service: Service) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        progress = client.get(f"/v1/fine_tuning/jobs/{job_id}").json().get("progress") or {}
        if progress.get("step", 0) >= step:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached step {step}\n{service.output()}")


def steps_named(pattern: re.Pattern[str], messages: list[str]) -> list[int]:
    return [int(match.group(1)) for match in map(pattern.fullmatch, messages) if match]


def test_a_paused_job_resumes_from_its_checkpoint_and_succeeds(service: Service) -> None:
    with service.client() as client:
        job_id = client.create_job(client.upload_examples(32), checkpoint_every=1000, **RUN)["id"]
        wait_for_step(client, job_id, 3, service)
        assert client.post(f"/v1/fine_tuning/jobs/{job_id}/pause").json()["status"] == "running"
        paused = client.wait_for_job(job_id, JOB_TIMEOUT_S, until=("paused", "succeeded", "failed"))
        assert paused["status"] == "paused", service.output()
        [step] = steps_named(PAUSED, [event["message"] for event in client.events(job_id)])
        newest = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"][0]
        assert newest["step_number"] == step and 3 <= step < RUN["max_steps"]
        time.sleep(1.0)  # a paused job stays paused: its worker released it
        assert client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "paused"
        assert client.post(f"/v1/fine_tuning/jobs/{job_id}/resume").json()["status"] == "queued"
        job = client.wait_for_job(job_id, JOB_TIMEOUT_S)
        history = client.events(job_id)
    messages = [event["message"] for event in history]
    assert job["status"] == "succeeded", service.output()
    assert job["fine_tuned_model"] is not None
    assert steps_named(RESUMED, messages) == [step]
    order = [messages.index(text) for text in ("The job was paused", "The job was resumed and queued")]
    assert order == sorted(order)
    resumed_at = messages.index("The job was resumed and queued")
    trained = [event["data"] for event in history if "train_loss" in (event["data"] or {})]
    after = [data["step"] for data in trained[[d["step"] for d in trained].index(step) + 1 :]]
    # Trained on past the pause (#18's auto settings may stop before total_steps: early stopping).
    assert max(d["step"] for d in trained) > step
    assert after[0] == step + 1 and after == sorted(after)  # no step trained twice
    assert resumed_at > messages.index("The job was paused")
