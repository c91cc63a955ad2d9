"""A worker killed with SIGKILL mid-job: the next worker's sweep re-queues the job, which resumes and ends.

The API's own periodic sweep is off here, so the recovery seen is the one a starting worker runs.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.e2e.conftest import Service

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HEARTBEAT_TIMEOUT_S = 3
JOB_TIMEOUT_S = 240.0
LONG_RUN = {"max_steps": 200, "learning_rate": 1e-2, "batch_size": 8, "num_blocks": 4, "warmup_steps": 0}


@pytest.fixture
def short_leases(service_env: dict[str, str]) -> dict[str, str]:
    service_env |= {"DIABLO_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S), "DIABLO_SWEEP_INTERVAL_S": "0"}
    return service_env


def wait_for_checkpoint(client: httpx.Client, job_id: str, service: Service) -> int:
    """Wait until the job has written a resumable checkpoint; return the newest step."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        page = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
        if page:
            return page[0]["step_number"]
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint after {JOB_TIMEOUT_S} s\n{service.output()}")


def test_a_job_whose_worker_was_killed_resumes_on_the_next_worker(
    short_leases: dict[str, str], service: Service
) -> None:
    with service.client() as client:
        file_id = client.upload_examples(32)
        job_id = client.create_job(file_id, checkpoint_every=4, **LONG_RUN)["id"]
        wait_for_checkpoint(client, job_id, service)
        service.workers[0].kill()  # SIGKILL: no hand-back, no acknowledgement, the lease just stops
        service.workers[0].wait()
        assert client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "running"
        time.sleep(HEARTBEAT_TIMEOUT_S + 2)  # the dead worker's lease expires
        service.start_worker()
        job = client.wait_for_job(job_id, JOB_TIMEOUT_S)
        history = client.events(job_id)
    messages = [event["message"] for event in history]
    assert job["status"] == "succeeded", service.output()
    assert "Worker lost; re-queued (attempt 2)" in messages
    assert "Fine-tuning job started (attempt 2)" in messages
    resumed = [
        int(m.group(1))
        for m in map(re.compile(r"Resuming from step (\d+) \(checkpoint .*\)").fullmatch, messages)
        if m
    ]
    assert len(resumed) == 1 and resumed[0] >= 4 and resumed[0] % 4 == 0
    steps = [event["data"]["step"] for event in history if event["type"] == "metrics"]
    assert steps[-1] == LONG_RUN["max_steps"]
