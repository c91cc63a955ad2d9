"""Fixtures for the worker tests: a tiny local base model, settings on a fresh database, job rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.spec import DiaBloHyperparameters, resolve_job_spec
from registry.db import get_sessionmaker, upgrade_database
from registry.jobs import JobStatus, create_job, transition
from registry.models import File
from registry.settings import Settings
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer

ANSWERS = ["blue", "green", "red", "gold"]


def chat_example(index: int) -> dict[str, Any]:
    """A short conversation whose answer a tiny model learns within a few steps."""
    return {
        "messages": [
            {"role": "user", "content": f"Colour {index % 4}?"},
            {"role": "assistant", "content": f"It is {ANSWERS[index % 4]}."},
        ]
    }


def jsonl(examples: list[Any]) -> bytes:
    return "".join(json.dumps(example) + "\n" for example in examples).encode()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama checkpoint with a byte-level ChatML tokenizer, saved like a hub model."""
    directory = tmp_path_factory.mktemp("models") / "tiny-llama"
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings for one test: CPU, its own data folder and database, checkpoints every 4 steps."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "device": "cpu",
        "checkpoint_every": 4,
        "heartbeat_interval_s": 1.0,
        "heartbeat_timeout_s": 60.0,
    }
    return Settings(**(values | overrides))


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """Settings on a migrated SQLite registry."""
    upgrade_database(sqlite_url)
    return make_settings(tmp_path / "data", sqlite_url)


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker[Session]:
    return get_sessionmaker(settings.database_url)


def store_file(session: Session, settings: Settings, content: bytes, name: str = "train.jsonl") -> str:
    """Write ``content`` to the files folder and record it as an uploaded fine-tune file."""
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(content).hexdigest()
    record = File(filename=name, purpose="fine-tune", bytes=len(content), sha256=digest, storage_path="")
    session.add(record)
    session.flush()
    (settings.files_dir / record.id).write_bytes(content)
    record.storage_path = record.id
    return record.id


def queue_job(
    sessions: sessionmaker[Session],
    settings: Settings,
    model: Path,
    content: bytes,
    *,
    diablo: dict[str, Any] | None = None,
    validation: bytes | None = None,
    evaluation: bytes | None = None,
) -> str:
    """Create a queued job on ``content``, resolving hyperparameters as the API does; return its id.

    The defaults give a fast tiny run: 2 epochs of batch 4, 4 blocks, a high learning rate, no warm-up.
    """
    given = {"n_epochs": 2, "batch_size": 4, "num_blocks": 4, "learning_rate": 2e-2, "warmup_steps": 0}
    resolved = resolve_job_spec(
        None,
        DiaBloHyperparameters(**(given | {"dropout": 0.0} | (diablo or {}))),
        num_examples=max(1, len(content.splitlines())),
        checkpoint_every=settings.checkpoint_every,
        has_validation_file=validation is not None,
        has_evaluation_file=evaluation is not None,
    )
    with sessions.begin() as session:
        training_file = store_file(session, settings, content)
        validation_file = store_file(session, settings, validation, "valid.jsonl") if validation else None
        evaluation_file = store_file(session, settings, evaluation, "eval.jsonl") if evaluation else None
        job = create_job(
            session,
            model=str(model),
            training_file=training_file,
            validation_file=validation_file,
            evaluation_file=evaluation_file,
            spec=resolved,
            suffix="test",
            seed=7,
        )
        transition(session, job, JobStatus.QUEUED)
        return job.id


@pytest.fixture
def new_job(sessions: sessionmaker[Session], settings: Settings, tiny_model_dir: Path) -> Callable[..., str]:
    """Make a queued job on the tiny model: ``new_job(content=..., diablo=..., validation=...)``."""

    def make(content: bytes | None = None, **kwargs: Any) -> str:
        data = content if content is not None else jsonl([chat_example(i) for i in range(12)])
        return queue_job(sessions, settings, tiny_model_dir, data, **kwargs)

    return make
