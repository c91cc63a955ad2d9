"""``diablo jobs watch`` and ``jobs create --watch`` following a job that the test drives like a worker."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from diablo_cli.job_watch import job_eta, metrics_fields
from registry.artifacts import fine_tuned_model_name
from registry.base_models import DEFAULT_MODEL_ID
from registry.db import session_scope
from registry.jobs import add_event, claim_job, get_job, list_jobs, transition
from tests.cli.conftest import Server, diablo, upload

pytestmark = pytest.mark.integration
STEPS = 4
PAUSE_S = 0.1


def metrics(step: int) -> dict[str, Any]:
    """A training step's metrics event data, as the worker records it."""
    return {
        "step": step, "total_steps": STEPS, "train_loss": 1.0 / step, "train_mean_token_accuracy": 0.5,
        "learning_rate": 5e-4 * step, "tokens_per_second": 1234.0, "eta_seconds": 2.0 * (STEPS - step),
    }  # fmt: skip


def run_job(url: str, job_id: str, outcome: str, steps: int = STEPS) -> None:
    """Claim the job, record ``steps`` metrics events, then move it to ``outcome``."""
    with session_scope(url) as session:
        claim_job(session, job_id, "worker-test")
    for step in range(1, steps + 1):
        time.sleep(PAUSE_S)
        with session_scope(url) as session:
            message = f"Step {step}/{STEPS}: training loss={1.0 / step:.4f}"
            add_event(session, job_id, "info", message, type="metrics", data=metrics(step))
    time.sleep(PAUSE_S)
    with session_scope(url) as session:
        job = get_job(session, job_id)
        error = {"code": "training_error", "message": "CUDA out of memory", "param": None}
        if outcome == "succeeded":
            job.fine_tuned_model = fine_tuned_model_name(job.model, job_id, job.suffix)
            add_event(session, job_id, "info", f"New fine-tuned model created: {job.fine_tuned_model}")
        transition(session, job, outcome, error if outcome == "failed" else None)


def newest_job_id(url: str, timeout_s: float = 30.0) -> str:
    """Wait for a job to exist and return the newest one's id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with session_scope(url) as session:
            jobs = list_jobs(session, limit=1).data
            if jobs:
                return jobs[0].id
        time.sleep(0.02)
    raise AssertionError("no job was created")


def create_job(server: Server, training_path: Path) -> str:
    result = diablo(
        server, "jobs", "create", "--training-file", upload(server, training_path), "--suffix", "w"
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def watch_while(server: Server, job_id: str, outcome: str, steps: int = STEPS):
    """Run ``diablo jobs watch`` while a thread runs the job to ``outcome``."""
    with ThreadPoolExecutor(1) as pool:
        driver: Future[None] = pool.submit(run_job, server.settings.database_url, job_id, outcome, steps)
        result = diablo(server, "jobs", "watch", job_id, "--interval", "0.05")
        driver.result(timeout=30)
    return result


def test_watch_follows_a_job_to_success(server: Server, training_path: Path) -> None:
    job_id = create_job(server, training_path)
    result = watch_while(server, job_id, "succeeded")
    assert result.exit_code == 0, result.output
    out = result.stdout
    statuses = [line.removeprefix("status: ") for line in out.splitlines() if line.startswith("status: ")]
    assert statuses == ["queued", "running", "succeeded"]
    assert "Created fine-tuning job" in out
    assert "succeeded" in out and f"step {STEPS}/{STEPS}" in out and "loss 0.2500" in out
    assert "lr 2.00e-03" in out and "1,234 tok/s" in out
    model = f"ft:{DEFAULT_MODEL_ID}:w:{job_id.removeprefix('ftjob-')}"
    assert f"Fine-tuned model: {model}" in out


def test_watch_exits_1_when_the_job_fails(server: Server, training_path: Path) -> None:
    job_id = create_job(server, training_path)
    result = watch_while(server, job_id, "failed", steps=2)
    assert result.exit_code == 1, result.output
    assert "step 2/4" in result.stdout and "loss 0.5000" in result.stdout
    assert "The job failed: CUDA out of memory" in result.stdout
    assert "Job failed [training_error]: CUDA out of memory" in result.stdout


def test_create_with_watch_prints_the_id_and_follows_to_cancellation(
    server: Server, training_path: Path
) -> None:
    file_id = upload(server, training_path)
    with ThreadPoolExecutor(1) as pool:
        url = server.settings.database_url
        driver = pool.submit(lambda: run_job(url, newest_job_id(url), "cancelled", steps=1))
        result = diablo(server, "jobs", "create", "--training-file", file_id, "--watch", "--interval", "0.05")
        driver.result(timeout=30)
    assert result.exit_code == 1, result.output
    job_id = result.stdout.strip()
    assert result.stdout == f"{job_id}\n" and job_id.startswith("ftjob-")
    assert "status: cancelled" in result.stderr and "step 1/4" in result.stderr
    assert "Job cancelled" in result.stderr


def test_watch_of_a_finished_job_returns_at_once(server: Server, training_path: Path) -> None:
    job_id = create_job(server, training_path)
    assert diablo(server, "jobs", "cancel", job_id).exit_code == 0
    result = diablo(server, "jobs", "watch", job_id)
    assert result.exit_code == 1
    assert "status: cancelled" in result.stdout and "The job was cancelled" not in result.stdout


def test_bar_fields_and_eta() -> None:
    fields = metrics_fields(metrics(2))
    assert (fields["completed"], fields["total"], fields["loss"], fields["eta"]) == (2, 4, "0.5000", "0:04")
    assert job_eta({"status": "running", "estimated_finish": 1000 + 3725}, now=1000) == "1:02:05"
    assert job_eta({"status": "running", "estimated_finish": None}, now=1000) is None
    assert job_eta({"status": "failed", "estimated_finish": 2000}, now=1000) == "-"


def status_event(event_id: str, status: str, message: str, level: str = "info") -> dict[str, Any]:
    """A status change event, as ``registry.jobs`` records it."""
    return {"id": event_id, "created_at": 0, "level": level, "message": message, "data": {"status": status}}


def metrics_event(step: int) -> dict[str, Any]:
    """A training step's metrics event, as the worker records it."""
    return {
        "id": f"ev-m{step}", "created_at": 0, "level": "info", "type": "metrics",
        "message": f"Step {step}/{STEPS}", "data": metrics(step),
    }  # fmt: skip


class MovingJob:
    """A client whose job moves on with every request: request ``i`` sees moment ``i`` (then the last one).

    A moment is the job's events (newest first) and the job itself at that time.
    """

    def __init__(self, *moments: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
        self.moments = moments
        self.requests = 0

    def _now(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        moment = self.moments[min(self.requests, len(self.moments) - 1)]
        self.requests += 1
        return moment

    def get_job(self, job_id: str) -> dict[str, Any]:
        return {"id": job_id, "estimated_finish": None, "fine_tuned_model": "m", **self._now()[1]}

    def list_events(self, job_id: str, limit: int) -> dict[str, Any]:
        return {"data": self._now()[0]}


def watch_moving_job(client: MovingJob) -> tuple[dict[str, Any], str, list[str]]:
    """Watch the job to its end; returns the job, the console's text and the statuses it printed."""
    from rich.console import Console

    from diablo_cli.job_watch import watch_job

    console = Console(record=True, width=200)
    job = watch_job(client, "ftjob-x", console, interval=0)  # type: ignore[arg-type]
    text = console.export_text()
    statuses = [line.removeprefix("status: ") for line in text.splitlines() if line.startswith("status: ")]
    return job, text, statuses


def test_a_job_finishing_between_the_two_requests_never_shows_a_stale_status() -> None:
    running = status_event("ev-1", "running", "Job started")
    finished = status_event("ev-2", "succeeded", "Done")
    client = MovingJob(([running], {"status": "running"}), ([finished, running], {"status": "succeeded"}))
    job, _, statuses = watch_moving_job(client)
    assert job["status"] == "succeeded"
    assert statuses == ["running", "succeeded"]


def test_a_job_finishing_between_the_two_requests_still_shows_its_last_events() -> None:
    running = status_event("ev-1", "running", "Fine-tuning job started")
    failed = status_event("ev-3", "failed", "The job failed: CUDA out of memory", level="error")
    error = {"code": "training_error", "message": "CUDA out of memory", "param": None}
    client = MovingJob(
        ([metrics_event(1), running], {"status": "running"}),
        ([failed, metrics_event(2), metrics_event(1), running], {"status": "failed", "error": error}),
    )
    job, text, statuses = watch_moving_job(client)
    assert job["status"] == "failed"
    assert statuses == ["running", "failed"]
    assert "The job failed: CUDA out of memory" in text  # the event listed after the job was seen failed
    assert "step 2/4" in text and "loss 0.5000" in text
    assert "Job failed [training_error]: CUDA out of memory" in text
