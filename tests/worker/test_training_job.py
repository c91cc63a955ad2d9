"""``run_training_job`` end to end on a tiny local model: success, checkpoints, events, idempotency."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.models.catalog import canonical_model_id
from diablo_core.models.loading import load_base_model
from diablo_core.training.checkpoints import is_resumable
from registry.artifacts import checkpoint_model_name, get_adapter
from registry.db import get_sessionmaker, upgrade_database
from registry.jobs import get_job
from registry.models import Adapter, Checkpoint, File, JobEvent
from registry.settings import Settings
from registry.storage import file_sha256
from registry.throughput import find_throughput
from tests.worker.conftest import chat_example, jsonl, make_settings, queue_job
from worker.training_job import run_training_job

WORKER = "test-worker:1"


def events_of(session: Session, job_id: str) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def metrics_of(session: Session, job_id: str) -> list[dict]:
    return [
        event.data
        for event in events_of(session, job_id)
        if event.type == "metrics" and "train_loss" in event.data
    ]


def test_job_succeeds_and_registers_its_adapter(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, tiny_model_dir: Path
) -> None:
    job_id = new_job()
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        job = get_job(session, job_id)
        assert (job.status, job.error, len(job.result_files)) == ("succeeded", None, 1)
        results = session.get(File, job.result_files[0])
        assert (results.purpose, results.filename, results.project_id) == (
            "fine-tune-results",
            "step_metrics.csv",
            job.project_id,
        )
        csv_lines = Path(results.storage_path).read_text().splitlines()
        assert results.bytes == Path(results.storage_path).stat().st_size
        assert job.fine_tuned_model == f"ft:{tiny_model_dir}:test:{job_id.split('-')[1]}"
        assert job.trained_tokens > 0 and job.finished_at is not None
        adapter = get_adapter(session, job.fine_tuned_model)
        weights = Path(adapter.storage_path) / "adapter_model.safetensors"
        assert adapter.sha256 == file_sha256(weights)
        assert adapter.size_bytes == weights.stat().st_size
        assert adapter.base_model_fingerprint == load_base_model(str(tiny_model_dir)).identity.content_hash
        assert adapter.config["num_blocks"] == 4
        assert Path(adapter.storage_path).parent == settings.adapters_dir
        messages = [event.message for event in events_of(session, job_id)]
        assert "Using device cpu" in messages
        (sized,) = [e.data for e in events_of(session, job_id) if e.data and "trainable_parameters" in e.data]
        stored = load_file(weights)
        assert sized["trainable_parameters"] == sum(tensor.numel() for tensor in stored.values()) > 0
        assert messages[-1] == "The job has successfully completed"
        metrics = metrics_of(session, job_id)
    # 12 examples, batch 4, 2 epochs: 6 steps, a metrics event for each.
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert csv_lines[0].split(",") == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "full_valid_loss",
        "full_valid_mean_token_accuracy",
    ]
    rows = [line.split(",") for line in csv_lines[1:]]
    assert [int(row[0]) for row in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(row[1]) for row in rows] == [pytest.approx(m["train_loss"], rel=1e-5) for m in metrics]
    assert {tuple(row[3:]) for row in rows} == {("", "", "", "")}  # no validation file
    assert {m["total_steps"] for m in metrics} == {6}
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert set(metrics[0]) >= {
        "learning_rate",
        "tokens_per_second",
        "epoch",
        "eta_seconds",
        "train_mean_token_accuracy",
    }
    with sessions() as session:
        measured = find_throughput(session, canonical_model_id(str(tiny_model_dir)))
    assert measured is not None and measured.jobs == 1 and measured.precision in ("fp32", "bf16")
    assert measured.tokens_per_second == pytest.approx(metrics[-1]["tokens_per_second"], rel=1e-6)
    assert measured.tokens_per_byte is not None and 0 < measured.tokens_per_byte <= 1  # byte-level tokens


def test_checkpoints_at_every_k_steps_and_each_epoch_end(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = new_job(validation=jsonl([chat_example(i) for i in range(4)]), diablo={"eval_every": 2})
    run_training_job(job_id, settings, WORKER)
    with sessions() as session:
        job = get_job(session, job_id)
        checkpoints = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
        valid_steps = [e.data["step"] for e in events_of(session, job_id) if "valid_loss" in (e.data or {})]
    by_step = {c.step_number: c for c in checkpoints}
    # checkpoint_every=4 gives step 4; epochs of 3 steps end at 3 and 6.
    assert sorted(by_step) == [3, 4, 6]
    assert by_step[4].fine_tuned_model_checkpoint == checkpoint_model_name(job.fine_tuned_model, 4)
    assert is_resumable(Path(by_step[4].storage_path))
    assert all(Path(c.storage_path, "adapter_model.safetensors").is_file() for c in checkpoints)
    assert set(by_step[4].metrics) >= {"step", "train_loss", "train_mean_token_accuracy"}
    assert by_step[4].metrics["valid_loss"] > 0
    assert by_step[4].metrics["full_valid_loss"] == by_step[4].metrics["valid_loss"]
    assert (
        by_step[4].metrics["full_valid_mean_token_accuracy"]
        == by_step[4].metrics["valid_mean_token_accuracy"]
    )
    assert valid_steps == [2, 4, 6]
    with sessions() as session:
        csv_path = Path(session.get(File, job.result_files[0]).storage_path)
    rows = {int(row[0]): row for row in (line.split(",") for line in csv_path.read_text().splitlines()[1:])}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert [bool(rows[step][3]) for step in sorted(rows)] == [False, True, False, True, False, True]
    assert float(rows[4][5]) == pytest.approx(by_step[4].metrics["full_valid_loss"], rel=1e-5)


def test_second_run_of_a_finished_job_does_nothing(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = new_job()
    run_training_job(job_id, settings, WORKER)
    with sessions() as session:
        before = [e.id for e in events_of(session, job_id)]
        adapter = session.scalars(select(Adapter).where(Adapter.job_id == job_id)).one()
    weights = Path(adapter.storage_path) / "adapter_model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert run_training_job(job_id, settings, "another-worker:2") is None
    with sessions() as session:
        assert [e.id for e in events_of(session, job_id)] == before
        assert get_job(session, job_id).attempts == 1
    assert weights.stat().st_mtime_ns == mtime


def test_job_succeeds_on_postgres(postgres_url: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    upgrade_database(postgres_url)
    settings = make_settings(tmp_path / "data", postgres_url)
    sessions = get_sessionmaker(postgres_url)
    job_id = queue_job(sessions, settings, tiny_model_dir, jsonl([chat_example(i) for i in range(8)]))
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        job = get_job(session, job_id)
        adapter = get_adapter(session, job.fine_tuned_model)
        assert len(metrics_of(session, job_id)) == 4
    assert adapter.sha256 == file_sha256(Path(adapter.storage_path) / "adapter_model.safetensors")
