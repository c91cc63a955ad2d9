"""Jobs and fine-tuned models record the fine-tuned model (or checkpoint) they continue from.

Rows written before this revision keep NULL: they started from a base model.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

TABLES = ("jobs", "adapters")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("parent_model", sa.String(length=512), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("parent_model")
