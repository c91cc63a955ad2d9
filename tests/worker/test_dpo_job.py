"""A DPO job through ``run_training_job`` on the tiny model: pairs trained, reward metrics recorded."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from diablo_core.spec.hyperparameters import DPOHyperparameters
from diablo_core.spec.preference import resolve_dpo_spec
from registry.jobs import JobStatus, create_job, get_job, transition
from registry.models import Checkpoint
from registry.settings import Settings
from tests.core.test_preferences import pair
from tests.worker.conftest import chat_example, jsonl, store_file
from tests.worker.test_training_job import WORKER, metrics_of
from worker.training_job import run_training_job


def queue_dpo_job(sessions: sessionmaker[Session], settings: Settings, model: Path, content: bytes) -> str:
    given = DPOHyperparameters(
        n_epochs=2, batch_size=4, num_blocks=4, learning_rate=2e-2, warmup_steps=0, dropout=0.0, beta=0.5
    )
    spec = resolve_dpo_spec(None, given, num_examples=len(content.splitlines()), checkpoint_every=2)
    with sessions.begin() as session:
        file_id = store_file(session, settings, content)
        job = create_job(session, model=str(model), training_file=file_id, spec=spec, suffix="dpo", seed=7)
        transition(session, job, JobStatus.QUEUED)
        return job.id


def test_dpo_job_succeeds_with_reward_metrics_in_events_and_checkpoints(
    sessions: sessionmaker[Session], settings: Settings, tiny_model_dir: Path
) -> None:
    pairs = [pair(f"Name: w{i}", f"Yes w{i}", f"w{i}") for i in range(8)]
    job_id = queue_dpo_job(sessions, settings, tiny_model_dir, jsonl(pairs))
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        job = get_job(session, job_id)
        assert job.method["type"] == "dpo" and job.fine_tuned_model
        metrics = metrics_of(session, job_id)
        checkpoints = session.query(Checkpoint).filter_by(job_id=job_id).all()
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[0]["train_loss"] > metrics[-1]["train_loss"]
    assert metrics[-1]["train_reward_margin"] > 0 and 0 <= metrics[-1]["train_reward_accuracy"] <= 1
    assert checkpoints and all("train_reward_margin" in c.metrics for c in checkpoints)


def test_a_chat_file_fails_a_dpo_job_as_the_users_data(
    sessions: sessionmaker[Session], settings: Settings, tiny_model_dir: Path
) -> None:
    job_id = queue_dpo_job(sessions, settings, tiny_model_dir, jsonl([chat_example(i) for i in range(4)]))
    assert run_training_job(job_id, settings, WORKER) == "failed"
    with sessions() as session:
        error = get_job(session, job_id).error
    assert error["code"] == "invalid_file_format" and error["param"] == "training_file"
