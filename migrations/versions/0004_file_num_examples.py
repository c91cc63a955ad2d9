"""Files record their number of examples at upload, so creating a job does not re-read the file to count them.

Rows uploaded before this revision keep NULL; the API counts such a file once when a job uses it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("num_examples", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("num_examples")
