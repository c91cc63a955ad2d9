"""Database fixtures shared by the registry, API and worker tests.

``sqlite_url`` and ``postgres_url`` give a fresh, empty database per test; ``database_url`` runs a test once
on each; ``migrated_database_url`` is ``database_url`` at the latest migration. Postgres databases are created
as ``diablo_test_<hex>`` on the server named by ``DIABLO_TEST_POSTGRES_URL`` and dropped afterwards. Tests
that use Postgres are marked ``integration`` automatically.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

POSTGRES_ADMIN_URL = os.environ.get("DIABLO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


def _dispose_engines() -> None:
    # Imported late so that tests which never touch a database do not import the registry.
    from registry.db import dispose_engines

    dispose_engines()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite database file in the test's temporary folder."""
    yield f"sqlite:///{tmp_path / 'registry.db'}"
    _dispose_engines()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh Postgres database, dropped (with its connections) when the test ends."""
    name = f"diablo_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        server = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{server}/{name}"
    finally:
        _dispose_engines()
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database: the test runs once on SQLite and once on Postgres."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def migrated_database_url(database_url: str) -> str:
    """``database_url`` with every migration applied."""
    from registry.db import upgrade_database

    upgrade_database(database_url)
    return database_url
