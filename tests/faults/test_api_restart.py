"""The API restarted (SIGTERM) with files uploaded and jobs queued: nothing is lost.

A new API process on the same data dir and database lists the same files (same bytes), jobs and events, and
a job created before the restart is trained once a worker starts: its message waited in Redis meanwhile.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.client import ServiceClient
from tests.e2e.conftest import REDIS_URL, Service
from tests.faults.conftest import fault_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STOP_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 180.0
TINY_RUN = {"max_steps": 4, "learning_rate": 1e-2, "batch_size": 4, "num_blocks": 4, "warmup_steps": 0}


def snapshot(client: ServiceClient, job_ids: list[str]) -> dict[str, Any]:
    """What a client sees of the service: files with their bytes, jobs, and every job's events."""
    files = client.get("/v1/files").json()["data"]
    return {
        "files": files,
        "contents": [client.get(f"/v1/files/{item['id']}/content").content for item in files],
        "jobs": client.get("/v1/fine_tuning/jobs").json()["data"],
        "events": {job_id: client.events(job_id) for job_id in job_ids},
    }


def stop_api(service: Service) -> int:
    """SIGTERM the API (as an orchestrator stops it) and wait for it to exit; return its exit code."""
    assert service.api is not None
    service.api.send_signal(signal.SIGTERM)
    return service.api.wait(timeout=STOP_TIMEOUT_S)


def test_nothing_is_lost_when_the_api_restarts(
    postgres_url: str, shared_redis_queue: list[str], tmp_path: Path
) -> None:
    env = fault_env(tmp_path / "data", postgres_url, REDIS_URL)
    shared_redis_queue.append(env["DIABLO_QUEUE_NAME"])
    service = Service(env, tmp_path)
    try:
        service.start_api()
        with service.client() as client:
            file_ids = [client.upload_examples(8, seed) for seed in range(2)]
            job_ids = [client.create_job(file_id, **TINY_RUN)["id"] for file_id in file_ids]
            before = snapshot(client, job_ids)
        assert stop_api(service) in (0, -signal.SIGTERM), service.output()
        service.start_api()
        with service.client() as client:
            after = snapshot(client, job_ids)
            service.start_worker()
            finished = [client.wait_for_job(i, JOB_TIMEOUT_S) for i in job_ids]
    finally:
        service.stop()
    assert [item["id"] for item in before["files"]] == file_ids[::-1]
    assert [job["id"] for job in before["jobs"]] == job_ids[::-1]
    assert all(job["status"] == "queued" for job in before["jobs"])
    assert after == before
    assert [job["status"] for job in finished] == ["succeeded", "succeeded"], service.output()
    assert "Application shutdown complete" in (tmp_path / "api.log").read_text()  # a graceful stop
    assert_structured_logs(tmp_path, job_ids)


def json_lines(log: Path) -> list[dict[str, Any]]:
    """The log's JSON lines (Celery's banner and warnings are plain text)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def assert_structured_logs(logs: Path, job_ids: list[str]) -> None:
    """The API's access lines carry request ids; the worker's lines about a job carry its id."""
    access = [line for line in json_lines(logs / "api.log") if line["logger"] == "api.access"]
    assert any(line["path"] == "/v1/fine_tuning/jobs" and line["method"] == "POST" for line in access)
    assert all(line["request_id"].startswith("req-") for line in access)
    worker = json_lines(logs / "worker1.log")
    assert {line["job_id"] for line in worker if line["logger"].startswith("worker.")} >= set(job_ids)
