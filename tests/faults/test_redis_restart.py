"""Redis restarted while jobs wait: no queued job is lost.

The registry, not the broker, is the source of truth. Three jobs are queued while no worker runs; Redis is
killed (it keeps nothing on disk) and started again empty, so their messages are gone. A worker started
afterwards still trains all three, because the sweeper (the API's, every second here) sends queued jobs that
nobody took within ``QUEUED_TIMEOUT_FACTOR`` heartbeat timeouts to the queue again.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from registry.sweeper import QUEUED_TIMEOUT_FACTOR
from tests.e2e.conftest import Service
from tests.faults.conftest import RedisServer, fault_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# Short leases make the sweeper re-send a forgotten job after QUEUED_TIMEOUT_FACTOR * 5 = 25 s.
HEARTBEAT_TIMEOUT_S = 5
JOB_TIMEOUT_S = 240.0
JOBS = 3
TINY_RUN = {"max_steps": 4, "learning_rate": 1e-2, "batch_size": 4, "num_blocks": 4, "warmup_steps": 0}
RESENT = "No worker has taken the job yet; sent it to the queue again"


def queue_depths(client: httpx.Client) -> dict[str, int]:
    """``diablo_queue_depth`` by source, as /metrics reports it."""
    found = re.findall(r'^diablo_queue_depth\{source="(\w+)"\} ([0-9.]+)$', client.get("/metrics").text, re.M)
    return {source: int(float(value)) for source, value in found}


def test_queued_jobs_survive_a_redis_restart(
    redis_server: RedisServer, postgres_url: str, tmp_path: Path
) -> None:
    env = fault_env(
        tmp_path / "data",
        postgres_url,
        redis_server.url,
        DIABLO_HEARTBEAT_INTERVAL_S="0.5",
        DIABLO_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S),
        DIABLO_SWEEP_INTERVAL_S="1",
    )
    queue = env["DIABLO_QUEUE_NAME"]
    service = Service(env, tmp_path)
    try:
        service.start_api()
        with service.client() as client:
            file_id = client.upload_examples(8)
            job_ids = [client.create_job(file_id, **TINY_RUN)["id"] for _ in range(JOBS)]
            with redis_server.client() as broker:
                assert broker.llen(queue) == JOBS  # the messages are in Redis...
            assert queue_depths(client) == {"registry": JOBS, "broker": JOBS}
            redis_server.kill()
            redis_server.start()
            with redis_server.client() as broker:
                assert broker.llen(queue) == 0  # ...and gone after the restart
            assert queue_depths(client) == {"registry": JOBS, "broker": 0}
            assert all(client.get(f"/v1/fine_tuning/jobs/{i}").json()["status"] == "queued" for i in job_ids)
            service.start_worker()
            timeout = JOB_TIMEOUT_S + QUEUED_TIMEOUT_FACTOR * HEARTBEAT_TIMEOUT_S
            finished = [client.wait_for_job(i, timeout) for i in job_ids]
            histories = [[event["message"] for event in client.events(i)] for i in job_ids]
    finally:
        service.stop()
    assert [job["status"] for job in finished] == ["succeeded"] * JOBS, service.output()
    assert all(RESENT in messages for messages in histories), histories
