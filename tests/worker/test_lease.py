"""The lease of a claimed job: renewed through long phases, fencing every visible write, cancel vs success."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from registry.artifacts import checkpoint_model_name
from registry.db import get_sessionmaker, upgrade_database
from registry.jobs import get_job, request_cancel
from registry.models import Adapter, Checkpoint, Job, JobEvent, now_unix
from registry.settings import Settings
from registry.storage import safe_dir_name
from registry.sweeper import recover_stale_jobs
from tests.worker.conftest import chat_example, jsonl, make_settings, queue_job
from tests.worker.test_job_outcomes import files_under, job_row, messages, metric_steps, on_step
from worker import artifact_store, training_job
from worker.training_job import run_training_job

WORKER = "test-worker:1"
TIMEOUT_S = 2.0


def stall_until_lease_would_expire(
    settings: Settings, sessions: sessionmaker[Session], job_id: str
) -> list[str]:
    """Block this phase past the lease timeout (no optimizer step meanwhile), then run a sweep."""
    entered = now_unix()  # no heartbeat of this worker can be newer than now, but the lease thread's
    while now_unix() <= entered + TIMEOUT_S + 1:  # whole seconds: heartbeat_at has 1 s resolution
        time.sleep(0.1)
    sent: list[str] = []
    return recover_stale_jobs(sessions, settings, enqueue=lambda job, _: sent.append(job)) + sent


@pytest.mark.parametrize("phase", ["load_examples", "stage_adapter"])
def test_a_phase_longer_than_the_lease_timeout_keeps_its_job(
    phase: str, tmp_path: Path, sqlite_url: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade_database(sqlite_url)
    settings = make_settings(
        tmp_path / "data", sqlite_url, heartbeat_interval_s=0.2, heartbeat_timeout_s=TIMEOUT_S
    )
    sessions = get_sessionmaker(sqlite_url)
    job_id = queue_job(sessions, settings, tiny_model_dir, jsonl([chat_example(i) for i in range(8)]))
    module = training_job if phase == "load_examples" else artifact_store
    real = getattr(module, phase)
    swept: list[list[str]] = []

    def slow(*args: Any, **kwargs: Any) -> Any:
        swept.append(stall_until_lease_would_expire(settings, sessions, job_id))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, phase, slow)
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    assert swept[:1] == [[]]  # the sweep found the job's lease fresh: nothing re-queued or re-sent
    job = job_row(sessions, job_id)
    assert (job.attempts, job.status) == (1, "succeeded")


def test_a_worker_that_loses_its_job_while_publishing_leaves_the_new_owners_adapter(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    job_id = new_job()
    real_stage = artifact_store.stage_adapter
    theirs: dict[str, Any] = {}

    def stage_then_lose(source: Path, adapters_dir: Path, name: str, attempt: int) -> Any:
        staged = real_stage(source, adapters_dir, name, attempt)
        # Meanwhile another worker took the job over and published its own adapter under the same name.
        with sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(worker_id="other:9"))
        final = adapters_dir / safe_dir_name(name)
        final.mkdir()
        (final / "adapter_model.safetensors").write_bytes(b"the other worker's adapter")
        theirs["path"], theirs["files"] = final, files_under(final)
        return staged

    monkeypatch.setattr(artifact_store, "stage_adapter", stage_then_lose)
    assert run_training_job(job_id, settings, WORKER) is None
    assert files_under(theirs["path"]) == theirs["files"]
    assert not [p for p in settings.adapters_dir.iterdir() if p.name.startswith(".tmp-")]
    with sessions() as session:
        assert session.scalars(select(Adapter)).all() == []


def test_a_re_delivered_job_resumes_from_its_epoch_checkpoint_and_says_so(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, monkeypatch
) -> None:
    job_id = new_job()  # 12 examples, batch 4: epochs end at steps 3 and 6; checkpoint_every=4

    def die_at_step_four(step: int) -> None:
        if step == 4:  # after the epoch checkpoint at step 3, before the periodic one at step 4
            raise SystemExit(1)

    on_step(monkeypatch, die_at_step_four)
    with pytest.raises(SystemExit):
        run_training_job(job_id, settings, WORKER)
    with sessions() as session:
        listed = [
            c.step_number for c in session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id))
        ]
    assert listed == [3]
    monkeypatch.undo()
    assert run_training_job(job_id, settings, "test-worker:2") == "succeeded"
    job = job_row(sessions, job_id)
    name = checkpoint_model_name(job.fine_tuned_model, 3)
    assert f"Resuming from step 3 (checkpoint {name})" in messages(sessions, job_id)
    assert metric_steps(sessions, job_id) == [1, 2, 3, 4, 5, 6]  # steps 1-3 ran once


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (None, "no checkpoint was saved before the previous attempt stopped"),
        ("corrupt", "checkpoint step-3 does not match the sha256 recorded when it was written"),
    ],
)
def test_a_re_delivered_job_that_cannot_resume_says_why_it_starts_over(
    damage: str | None,
    reason: str,
    new_job: Callable[..., str],
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch,
) -> None:
    job_id = new_job()
    stop_at = 2 if damage is None else 4

    def die(step: int) -> None:
        if step == stop_at:
            raise SystemExit(1)

    on_step(monkeypatch, die)
    with pytest.raises(SystemExit):
        run_training_job(job_id, settings, WORKER)
    if damage == "corrupt":  # same size, other bytes: only the recorded digest can tell
        weights = (
            artifact_store.checkpoints_dir(settings.adapters_dir, job_id) / "step-3/adapter_model.safetensors"
        )
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    monkeypatch.undo()
    assert run_training_job(job_id, settings, "test-worker:2") == "succeeded"
    assert f"Starting over from step 1: {reason}" in messages(sessions, job_id)
    assert metric_steps(sessions, job_id) == [*range(1, stop_at), 1, 2, 3, 4, 5, 6]


def test_each_listed_checkpoint_records_the_sha256_of_its_weights(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = new_job()
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
    assert sorted(row.step_number for row in rows) == [3, 4, 6]
    for row in rows:
        weights = Path(row.storage_path) / "adapter_model.safetensors"
        assert row.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_a_cancel_during_publish_ends_the_job_cancelled_with_nothing_published(
    database_url: str, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade_database(database_url)
    settings = make_settings(tmp_path / "data", database_url)
    sessions = get_sessionmaker(database_url)
    job_id = queue_job(sessions, settings, tiny_model_dir, jsonl([chat_example(i) for i in range(8)]))
    real_stage = artifact_store.stage_adapter

    def cancel_while_staging(*args: Any) -> Any:
        staged = real_stage(*args)
        with sessions.begin() as session:  # the API answers this cancel 200: the job has not finished
            request_cancel(session, get_job(session, job_id))
        return staged

    monkeypatch.setattr(artifact_store, "stage_adapter", cancel_while_staging)
    assert run_training_job(job_id, settings, WORKER) == "cancelled"
    with sessions() as session:
        assert session.scalars(select(Adapter)).all() == []
        events = [e.message for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id))]
    assert events[-2:] == ["Cancelled before the fine-tuned model was published", "The job was cancelled"]
    published = [p for p in settings.adapters_dir.iterdir() if p.name.startswith("ft-")]
    assert published == []
