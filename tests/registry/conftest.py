"""Sessions on a migrated database, for the registry tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from registry.db import get_sessionmaker


@pytest.fixture
def sessions(migrated_database_url: str) -> sessionmaker[Session]:
    """A session factory on a migrated database (SQLite and Postgres)."""
    return get_sessionmaker(migrated_database_url)


@pytest.fixture
def session(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One session; tests commit when another session must see their writes."""
    with sessions() as session:
        yield session
