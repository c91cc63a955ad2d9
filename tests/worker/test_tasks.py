"""The Celery task ``diablo.train``: registered by name, retries only database outages, a bounded number."""

from __future__ import annotations

import os

import pytest
from celery.exceptions import Reject, Retry
from sqlalchemy.exc import OperationalError

from registry.queue import TRAIN_TASK
from worker import tasks
from worker.celery_app import app
from worker.shutdown import clear_stop, request_stop


def test_the_task_is_registered_under_its_public_name() -> None:
    assert tasks.train_job.name == TRAIN_TASK and app.tasks[TRAIN_TASK].run.__name__ == "train_job"
    assert tasks.worker_id("celery@host") == f"celery@host:{os.getpid()}"


def test_database_outages_are_retried_a_bounded_number_of_times(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def database_down(job_id: str, settings, worker_id: str) -> None:
        calls.append(job_id)
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(tasks, "run_training_job", database_down)
    result = tasks.train_job.apply(args=["ftjob-1"])
    assert isinstance(result.result, OperationalError | Retry)
    assert calls == ["ftjob-1"] * (tasks.MAX_RETRIES + 1)


def test_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken(job_id: str, settings, worker_id: str) -> None:
        calls.append(job_id)
        raise ValueError("not a transient problem")

    monkeypatch.setattr(tasks, "run_training_job", broken)
    result = tasks.train_job.apply(args=["ftjob-2"])
    assert isinstance(result.result, ValueError) and calls == ["ftjob-2"]


def test_the_task_returns_the_final_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "run_training_job", lambda job_id, settings, worker_id: "succeeded")
    assert tasks.train_job.apply(args=["ftjob-3"]).get() == "succeeded"


def test_a_message_delivered_during_shutdown_goes_back_to_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(tasks, "run_training_job", lambda job_id, settings, worker_id: calls.append(job_id))
    request_stop()
    try:
        with pytest.raises(Reject) as rejected:
            tasks.train_job.run("ftjob-4")
    finally:
        clear_stop()
    assert rejected.value.requeue and calls == []
    tasks.train_job.run("ftjob-5")
    assert calls == ["ftjob-5"]
