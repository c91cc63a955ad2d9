"""A per-project lock held until the caller's transaction ends, for check-then-write rules of one project.

Rules such as "at most N unfinished jobs" or "no file deleted while a job uses it" read rows and then write
one; two requests running that pair at once would both pass the check. Each such request takes its
project's lock first, so the pairs of one project run one after another. On Postgres it is a transaction
advisory lock keyed by the project (other projects do not wait). SQLite has one writer at a time: taking
the database's write lock serializes every such pair, and the waiter's later reads see the winner's rows.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.orm import Session

# Keeps these keys apart from other advisory locks (registry.db.MIGRATION_LOCK_ID) in practice.
_NAMESPACE = b"diablo-project-lock:"


def project_lock_key(project: str) -> int:
    """A signed 64-bit key for ``project`` (Postgres advisory locks take a bigint)."""
    digest = hashlib.sha256(_NAMESPACE + project.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_project(session: Session, project: str) -> None:
    """Wait for and take ``project``'s lock; it is released when the session's transaction ends.

    On SQLite this must be the transaction's first write, and should come before reads whose results the
    rule depends on (they are then read under the lock).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": project_lock_key(project)})
        return
    # A write statement begins SQLite's write transaction even when it matches no row; the driver sends
    # BEGIN before it, and busy_timeout makes a second writer wait here instead of failing.
    session.execute(text("UPDATE jobs SET status = status WHERE 0 = 1"))
