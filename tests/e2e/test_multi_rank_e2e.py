"""A worker with ``DIABLO_DEVICES_PER_JOB=2`` trains each job on two gloo ranks on the CPU (torchrun).

Over HTTP: the job succeeds, its events name the world, the adapter is served; a cancel stops every rank.
A rank killed mid-job (SIGKILL) ends the whole group: the job is retried from its last checkpoint (rank 0
killed) or failed by rank 0 (another rank killed).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from statistics import mean

import httpx
import pytest

from tests.e2e.client import TINY_MODEL
from tests.e2e.conftest import Service
from tests.e2e.test_fine_tune_e2e import TINY_RUN, assert_adapter_on_disk
from tests.process_helpers import child_pids, is_running

pytestmark = [pytest.mark.integration, pytest.mark.slow]
JOB_TIMEOUT_S = 300.0
WORLD_EVENT = "Training on 2 processes (ddp, cpu)"


@pytest.fixture
def two_ranks(service_env: dict[str, str]) -> dict[str, str]:
    """Two ranks per job, and the API serving the tiny base model (the adapters' base)."""
    service_env |= {"DIABLO_DEVICES_PER_JOB": "2", "DIABLO_DEFAULT_MODEL": TINY_MODEL}
    return service_env


def rank_pids(service: Service) -> list[int]:
    """The worker's ranks: the children of the torchrun agent that the worker started."""
    return [rank for agent in child_pids(service.workers[0].pid) for rank in child_pids(agent)]


def wait_for_ranks(client: httpx.Client, job_id: str, service: Service) -> list[int]:
    """Wait until both ranks train (a checkpoint is registered); return their pids."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        if client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]:
            ranks = rank_pids(service)
            assert len(ranks) == 2, service.output()
            return ranks
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint after {JOB_TIMEOUT_S} s\n{service.output()}")


def wait_until_gone(pids: list[int], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(is_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(is_running(pid) for pid in pids), "a rank outlived its job"


def test_a_two_rank_job_succeeds_and_its_model_answers(two_ranks: dict[str, str], service: Service) -> None:
    with service.client() as client:
        file_id = client.upload_examples(32)
        created = client.create_job(file_id, dropout=0.0, checkpoint_every=4, **TINY_RUN)
        job = client.wait_for_job(created["id"], JOB_TIMEOUT_S)
        assert (job["status"], job["error"]) == ("succeeded", None), service.output()
        history = client.events(job["id"])
        checkpoints = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
        messages = [{"role": "user", "content": "What is 2 + 3?"}]
        body = {"model": job["fine_tuned_model"], "messages": messages, "max_tokens": 4}
        answer = client.post("/v1/chat/completions", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == job["fine_tuned_model"] and answer.json()["choices"][0]["message"]
    assert WORLD_EVENT in [event["message"] for event in history]
    losses = [event["data"]["train_loss"] for event in history if event["type"] == "metrics"]
    assert len(losses) == TINY_RUN["max_steps"] and mean(losses[-3:]) < mean(losses[:3])
    assert {4, 8, 12} <= {checkpoint["step_number"] for checkpoint in checkpoints}  # written once, by rank 0
    assert job["trained_tokens"] > 0
    assert_adapter_on_disk(service.env["DIABLO_DATABASE_URL"], job["fine_tuned_model"])
    assert rank_pids(service) == []


def test_cancelling_a_two_rank_job_stops_every_rank(two_ranks: dict[str, str], service: Service) -> None:
    with service.client() as client:
        file_id = client.upload_examples(32)
        created = client.create_job(file_id, checkpoint_every=2, **(TINY_RUN | {"max_steps": 10_000}))
        ranks = wait_for_ranks(client, created["id"], service)
        assert client.post(f"/v1/fine_tuning/jobs/{created['id']}/cancel").status_code == 200
        job = client.wait_for_job(created["id"], 60)
    assert job["status"] == "cancelled" and job["fine_tuned_model"] is None, service.output()
    wait_until_gone(ranks)


def rank_of(pid: int) -> int:
    """The ``RANK`` torchrun gave the process ``pid``."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(int(entry[5:]) for entry in environ if entry.startswith(b"RANK="))


def kill_rank(client: httpx.Client, job_id: str, service: Service, rank: int) -> None:
    """SIGKILL one rank mid-job; every rank of the group ends (no half of the job runs on)."""
    ranks = wait_for_ranks(client, job_id, service)
    os.kill(next(pid for pid in ranks if rank_of(pid) == rank), signal.SIGKILL)
    wait_until_gone(ranks)


def test_a_killed_rank_0_ends_the_group_and_the_job_is_retried(
    two_ranks: dict[str, str], service: Service
) -> None:
    with service.client() as client:
        file_id = client.upload_examples(32)
        created = client.create_job(file_id, checkpoint_every=4, **(TINY_RUN | {"max_steps": 40}))
        kill_rank(client, created["id"], service, 0)
        job = client.wait_for_job(created["id"], JOB_TIMEOUT_S)
        messages = [event["message"] for event in client.events(created["id"])]
    assert job["status"] == "succeeded", service.output()
    failed = [m for m in messages if re.fullmatch(r"A training process failed \(exit status -?\d+\); .*", m)]
    assert len(failed) == 1 and "Fine-tuning job started (attempt 2)" in messages
    assert any(re.fullmatch(r"Resuming from step \d+ \(checkpoint .*\)", m) for m in messages)
    assert messages.count(WORLD_EVENT) == 2


def test_a_killed_rank_1_fails_the_job_through_rank_0(two_ranks: dict[str, str], service: Service) -> None:
    with service.client() as client:
        file_id = client.upload_examples(32)
        created = client.create_job(file_id, checkpoint_every=2, **(TINY_RUN | {"max_steps": 10_000}))
        kill_rank(client, created["id"], service, 1)
        job = client.wait_for_job(created["id"], 60)
    # Rank 0's next collective fails ("connection reset by peer"), which fails the job like any error in
    # training; a rank 0 killed instead leaves the job to the worker, which retries it (the test above).
    assert (job["status"], job["error"]["code"]) == ("failed", "internal_error"), service.output()
