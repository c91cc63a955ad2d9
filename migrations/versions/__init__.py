"""Alembic revisions, one file each, every one with a working downgrade."""
