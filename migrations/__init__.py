"""Alembic migrations of the registry; run them with ``registry.db.upgrade_database`` or ``alembic``."""
