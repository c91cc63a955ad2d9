"""A job's wandb integration, offline (no WANDB_API_KEY): one run per job, metrics per step, settings kept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from registry.models import Job
from registry.settings import Settings
from tests.worker.conftest import chat_example, jsonl
from tests.worker.wandb_records import read_run
from worker.integrations import wandb_dir
from worker.training_job import run_training_job

WORKER = "test-worker:1"


def _with_integrations(sessions: sessionmaker[Session], job_id: str, integrations: list[dict]) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(integrations=integrations))


def _run_file(settings: Settings, job_id: str) -> Path:
    (found,) = wandb_dir(settings.data_dir, job_id).glob("wandb/offline-run-*/run-*.wandb")
    return found


def test_a_wandb_run_logs_every_step_offline(
    new_job: Callable[..., str],
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    job_id = new_job(validation=jsonl([chat_example(i) for i in range(4)]), diablo={"eval_every": 3})
    wandb = {"project": "diablo-tests", "entity": "team", "tags": ["tiny", "ci"]}
    _with_integrations(sessions, job_id, [{"type": "wandb", "wandb": wandb}])
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    run = read_run(_run_file(settings, job_id))
    assert run["run"] == {
        "project": "diablo-tests",
        "entity": "team",
        "name": job_id,
        "tags": ["tiny", "ci"],
        "id": job_id,
    }
    assert run["config"]["batch_size"] == 4 and run["config"]["job_id"] == job_id
    steps = [row["_step"] for row in run["history"]]
    assert steps == [1, 2, 3, 4, 5, 6]  # validation at 3 and 6 joins its step's row
    assert all(row["train_loss"] > 0 for row in run["history"])
    assert [bool(row.get("full_valid_loss")) for row in run["history"]] == [False, False, True] * 2
    assert run["history"][-1]["train_loss"] < run["history"][0]["train_loss"]


def test_a_named_run_and_a_job_without_integrations(
    new_job: Callable[..., str],
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    named, bare = new_job(), new_job()
    _with_integrations(sessions, named, [{"type": "wandb", "wandb": {"project": "p", "name": "my-run"}}])
    assert run_training_job(named, settings, WORKER) == "succeeded"
    assert run_training_job(bare, settings, WORKER) == "succeeded"
    assert read_run(_run_file(settings, named))["run"]["name"] == "my-run"
    assert not wandb_dir(settings.data_dir, bare).exists()
