"""Engines, sessions and schema upgrades for SQLite and Postgres."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from registry.storage import file_lock

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Arbitrary constant shared by every process that migrates the same Postgres database.
MIGRATION_LOCK_ID = 0x0D1AB10
SQLITE_BUSY_TIMEOUT_MS = 30_000
# The API runs sync handlers on anyio's thread pool (40 threads): one pooled connection per thread, so a burst
# of requests waits for a thread, never for a connection. Connections open on demand; idle ones stay open.
POOL_SIZE = 10
POOL_MAX_OVERFLOW = 30

_engines: dict[str, Engine] = {}
_sessionmakers: dict[Engine, sessionmaker[Session]] = {}
_engines_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Return ``url`` with Postgres URLs pointed at the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_path(url: str) -> Path | None:
    """Return the file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while one writer commits; busy_timeout makes writers wait instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """Create an engine with the options this service needs.

    SQLite: the parent folder is created, connections may cross threads, and every connection runs in WAL
    mode with a busy timeout and foreign keys enforced. Postgres: psycopg 3 with pre-ping. Both pool up to
    ``POOL_SIZE + POOL_MAX_OVERFLOW`` connections.

    Args:
        url: A SQLAlchemy URL; ``postgresql://`` is rewritten to ``postgresql+psycopg://``.
    """
    url = normalize_url(url)
    path = sqlite_path(url)
    pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_MAX_OVERFLOW}
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **pool)
    if path is None:
        pool = {}  # in-memory SQLite keeps one connection per thread (SingletonThreadPool)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    engine = create_engine(url, connect_args=connect_args, **pool)
    event.listen(engine, "connect", _configure_sqlite)
    return engine


def get_engine(url: str | None = None) -> Engine:
    """Return the process-wide engine for ``url`` (default: the configured database), creating it once."""
    if url is None:
        from registry.settings import get_settings

        url = get_settings().database_url
    url = normalize_url(url)
    with _engines_lock:
        if url not in _engines:
            _engines[url] = create_db_engine(url)
        return _engines[url]


def dispose_engines() -> None:
    """Close every engine made by ``get_engine`` (tests call this before dropping a database)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _sessionmakers.clear()


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """Return the session factory bound to ``get_engine(url)``; objects stay readable after commit."""
    engine = get_engine(url)
    factory = _sessionmakers.get(engine)
    if factory is None:  # made once per engine: a sessionmaker builds a Session subclass
        factory = _sessionmakers.setdefault(engine, sessionmaker(bind=engine, expire_on_commit=False))
    return factory


@contextlib.contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """Yield a session that commits when the block ends and rolls back if it raises."""
    with get_sessionmaker(url)() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str) -> Config:
    """Return an Alembic config for ``url`` that does not depend on the working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation; URLs may contain percent-escaped passwords.
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def _run_alembic(url: str, action: str, revision: str) -> None:
    """Run ``alembic <action> <revision>`` while holding a lock that serializes concurrent migrators."""
    config = alembic_config(url)
    engine = create_db_engine(url)
    path = sqlite_path(url)
    lock = file_lock(path.with_name(path.name + ".migrate.lock")) if path else contextlib.nullcontext()
    try:
        with lock, engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Released at commit; Postgres DDL is transactional, so waiters see the finished schema.
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            config.attributes["connection"] = connection
            getattr(command, action)(config, revision)
    finally:
        engine.dispose()


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply pending migrations up to ``revision``; safe to call from several processes at once."""
    _run_alembic(url, "upgrade", revision)


def downgrade_database(url: str, revision: str = "base") -> None:
    """Revert migrations down to ``revision`` (``"base"`` drops every table)."""
    _run_alembic(url, "downgrade", revision)


def current_revision(url: str) -> str | None:
    """Return the revision the database is at, or None if it was never migrated."""
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
