"""Initial registry: files, jobs, job events, checkpoints, adapters, idempotency keys."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _project_id(primary_key: bool = False) -> sa.Column:
    return sa.Column(
        "project_id", sa.String(64), nullable=False, server_default="default", primary_key=primary_key
    )


def _id() -> sa.Column:
    return sa.Column("id", sa.String(64), nullable=False)


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.BigInteger(), nullable=False)


def _job_id(nullable: bool = False) -> sa.Column:
    return sa.Column("job_id", sa.String(64), nullable=nullable)


def _job_foreign_key(table: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["job_id"], ["jobs.id"], name=op.f(f"fk_{table}_job_id_jobs"), ondelete=ondelete
    )


def _create_table(
    table: str, *items: sa.SchemaItem, key: tuple[str, ...] = ("id",), indexes: tuple[str, ...] = ()
) -> None:
    """Create ``table`` with its primary key on ``key`` and one index per column in ``indexes``."""
    op.create_table(table, *items, sa.PrimaryKeyConstraint(*key, name=op.f(f"pk_{table}")))
    for column in indexes:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column])


def _create_files() -> None:
    _create_table(
        "files",
        _id(),
        _project_id(),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_path", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_details", sa.Text(), nullable=True),
        _created_at(),
        indexes=("project_id",),
    )


def _create_jobs() -> None:
    _create_table(
        "jobs",
        _id(),
        _project_id(),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("training_file", sa.String(64), nullable=False),
        sa.Column("validation_file", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("fine_tuned_model", sa.String(512), nullable=True),
        sa.Column("suffix", sa.String(64), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("hyperparameters", sa.JSON(), nullable=False),
        sa.Column("method", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("integrations", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("result_files", sa.JSON(), nullable=False),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("estimated_finish", sa.BigInteger(), nullable=True),
        _created_at(),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("heartbeat_at", sa.BigInteger(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        indexes=("project_id", "status"),
    )


def _create_job_children() -> None:
    _create_table(
        "job_events",
        _id(),
        _job_id(),
        _created_at(),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        _job_foreign_key("job_events", ondelete="CASCADE"),
    )
    op.create_index("ix_job_events_job_id_id", "job_events", ["job_id", "id"])
    _create_table(
        "checkpoints",
        _id(),
        _job_id(),
        sa.Column("step_number", sa.Integer(), nullable=False),
        sa.Column("fine_tuned_model_checkpoint", sa.String(512), nullable=False),
        sa.Column("storage_path", sa.String(1024), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        _created_at(),
        _job_foreign_key("checkpoints", ondelete="CASCADE"),
        sa.UniqueConstraint("job_id", "step_number", name="uq_checkpoints_job_id_step_number"),
    )


def _create_adapters() -> None:
    _create_table(
        "adapters",
        sa.Column("name", sa.String(512), nullable=False),
        _project_id(),
        _job_id(nullable=True),
        sa.Column("base_model", sa.String(256), nullable=False),
        sa.Column("base_model_fingerprint", sa.String(128), nullable=True),
        sa.Column("storage_path", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=True),
        _created_at(),
        _job_foreign_key("adapters", ondelete="SET NULL"),
        key=("name",),
        indexes=("job_id", "project_id"),
    )


def _create_idempotency_keys() -> None:
    _create_table(
        "idempotency_keys",
        _project_id(primary_key=True),
        sa.Column("key", sa.String(256), nullable=False, primary_key=True),
        sa.Column("route", sa.String(256), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        _created_at(),
        key=("project_id", "key"),
    )


def upgrade() -> None:
    _create_files()
    _create_jobs()
    _create_job_children()
    _create_adapters()
    _create_idempotency_keys()


def downgrade() -> None:
    # Children first: their foreign keys point at jobs. Dropping a table drops its indexes.
    for table in ("idempotency_keys", "adapters", "checkpoints", "job_events", "jobs", "files"):
        op.drop_table(table)
