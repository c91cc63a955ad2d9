"""Alembic environment: migrates the registry tables on SQLite or Postgres.

``registry.db.upgrade_database`` passes an open connection (holding the migration lock) in
``config.attributes["connection"]``. Run from the command line (``alembic upgrade head``), the URL comes from
``sqlalchemy.url`` in alembic.ini if set, else from ``DIABLO_DATABASE_URL`` / the default settings.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from registry.db import create_db_engine, normalize_url
from registry.models import Base
from registry.settings import get_settings

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    return normalize_url(config.get_main_option("sqlalchemy.url") or get_settings().database_url)


def _configure(connection: Connection) -> None:
    # Batch mode rebuilds SQLite tables for the ALTERs that SQLite cannot run in place.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    engine = create_db_engine(_database_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
