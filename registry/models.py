"""Tables of the registry: uploaded files, fine-tuning jobs, their events and checkpoints, adapters, API keys.

Times are unix seconds (``BigInteger``), the unit the API reports. Ids come from ``registry.ids.new_id`` and
sort by creation time; adapters are keyed by their fine-tuned model name. ``project_id`` scopes files, jobs,
adapters, idempotency keys and API keys to the project that owns them (a name; "default" when auth is off).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column

from registry.ids import API_KEY_PREFIX, CHECKPOINT_PREFIX, EVENT_PREFIX, FILE_PREFIX, JOB_PREFIX, new_id

DEFAULT_PROJECT = "default"

# Named constraints let Alembic drop and recreate them by name (batch mode on SQLite relies on this).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def now_unix() -> int:
    """Return the current time in whole unix seconds."""
    return int(time.time())


def _prefixed_id(prefix: str) -> MappedColumn[str]:
    """A primary key made by ``new_id(prefix)`` (``file-…``, ``ftjob-…``), as OpenAI's ids look."""
    return mapped_column(String(64), primary_key=True, default=lambda: new_id(prefix))


def _owning_project() -> MappedColumn[str]:
    """The project a row belongs to (indexed); rows from before projects belong to the default one."""
    return mapped_column(String(64), default=DEFAULT_PROJECT, server_default=DEFAULT_PROJECT, index=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class File(Base):
    __tablename__ = "files"

    id: Mapped[str] = _prefixed_id(FILE_PREFIX)
    project_id: Mapped[str] = _owning_project()
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(32), default="processed")
    status_details: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_unix)
    # Counted when the file is validated at upload; NULL for files uploaded before it was recorded.
    num_examples: Mapped[int | None] = mapped_column(Integer, default=None)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = _prefixed_id(JOB_PREFIX)
    project_id: Mapped[str] = _owning_project()
    model: Mapped[str] = mapped_column(String(256))
    # File ids without foreign keys: a file may be deleted while the jobs trained on it stay listed.
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), default=None)
    # Held-out chat examples answered at each evaluation (``diablo_core.evaluation``).
    evaluation_file: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(32), default="validating_files", index=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), default=None)
    suffix: Mapped[str | None] = mapped_column(String(64), default=None)
    seed: Mapped[int | None] = mapped_column(BigInteger, default=None)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    method: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # ``metadata`` is reserved on declarative classes, so the attribute carries a trailing underscore.
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, default=None)
    integrations: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, default=None)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_unix)
    started_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker_id: Mapped[str | None] = mapped_column(String(128), default=None)
    heartbeat_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The fine-tuned model or checkpoint whose blocks the job starts from (None: a fresh adapter).
    parent_model: Mapped[str | None] = mapped_column(String(512), default=None)
    # Asks the worker of a running job to checkpoint and release it as ``paused`` (migration 0006).
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[str] = _prefixed_id(EVENT_PREFIX)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_unix)
    level: Mapped[str] = mapped_column(String(16), default="info")
    type: Mapped[str] = mapped_column(String(16), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[str] = _prefixed_id(CHECKPOINT_PREFIX)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step_number: Mapped[int] = mapped_column(Integer)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(512))
    storage_path: Mapped[str | None] = mapped_column(String(1024), default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The weights file's digest when it was written (None for rows older than migration 0003).
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_unix)

    # One checkpoint per step: a re-delivered job that saves the same step again updates it.
    __table_args__ = (UniqueConstraint("job_id", "step_number", name="uq_checkpoints_job_id_step_number"),)


class Adapter(Base):
    __tablename__ = "adapters"

    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    project_id: Mapped[str] = _owning_project()
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None, index=True
    )
    base_model: Mapped[str] = mapped_column(String(256))
    # What identifies the exact base weights (e.g. the sha256 of the GGUF file), checked before loading.
    base_model_fingerprint: Mapped[str | None] = mapped_column(String(128), default=None)
    storage_path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_unix)
    # The fine-tuned model or checkpoint its training started from (None: a fresh adapter).
    parent_model: Mapped[str | None] = mapped_column(String(512), default=None)


class ModelThroughput(Base):
    """Training speed measured on a base model at a precision, from its jobs that succeeded.

    ``tokens_per_byte`` relates a training file's size to its tokens under the model's tokenizer, so a job
    can be estimated before any tokenizer is loaded (``registry.throughput``).
    """

    __tablename__ = "model_throughput"

    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    precision: Mapped[str] = mapped_column(String(16), primary_key=True)
    tokens_per_second: Mapped[float] = mapped_column(Float)
    tokens_per_byte: Mapped[float | None] = mapped_column(Float, default=None)
    jobs: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_unix)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    project_id: Mapped[str] = mapped_column(
        String(64), primary_key=True, default=DEFAULT_PROJECT, server_default=DEFAULT_PROJECT
    )
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    route: Mapped[str] = mapped_column(String(256))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer, default=200)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_unix)


class ApiKey(Base):
    """An API key of a project: only the sha256 of its secret is stored, and a short prefix to show."""

    __tablename__ = "api_keys"

    id: Mapped[str] = _prefixed_id(API_KEY_PREFIX)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str | None] = mapped_column(String(256), default=None)
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_unix)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
