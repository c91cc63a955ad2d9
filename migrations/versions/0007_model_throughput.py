"""Measured training throughput per base model and precision, for estimates before a job starts."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "model_throughput",
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("precision", sa.String(16), nullable=False),
        sa.Column("tokens_per_second", sa.Float(), nullable=False),
        sa.Column("tokens_per_byte", sa.Float(), nullable=True),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("model", "precision", name=op.f("pk_model_throughput")),
    )


def downgrade() -> None:
    op.drop_table("model_throughput")
