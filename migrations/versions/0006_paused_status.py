"""Jobs can be paused: a ``pause_requested`` flag beside ``cancel_requested``.

The status column is a plain string, so the new ``paused`` status needs no change of its own; the flag is
what a running job's worker reads at every step to know it must checkpoint and release the job.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("pause_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    # A paused job cannot be represented without the flag's release: it goes back to the queue.
    op.execute("UPDATE jobs SET status = 'queued' WHERE status = 'paused'")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pause_requested")
