from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from registry.db import create_db_engine, current_revision, downgrade_database, upgrade_database
from registry.models import Base

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "files",
    "jobs",
    "job_events",
    "checkpoints",
    "adapters",
    "idempotency_keys",
    "api_keys",
    "model_throughput",
}
HEAD = "0008"


def _tables(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    assert current_revision(database_url) is None
    upgrade_database(database_url)
    assert current_revision(database_url) == HEAD
    assert _tables(database_url) == TABLES
    downgrade_database(database_url)
    assert current_revision(database_url) is None
    assert _tables(database_url) == set()
    upgrade_database(database_url)
    assert _tables(database_url) == TABLES


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    upgrade_database(database_url)
    upgrade_database(database_url)
    assert current_revision(database_url) == HEAD


def test_migrations_match_the_models(migrated_database_url: str) -> None:
    engine = create_db_engine(migrated_database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_concurrent_upgrades_from_several_processes(database_url: str) -> None:
    code = "import sys; from registry.db import upgrade_database; upgrade_database(sys.argv[1])"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], errors
    assert current_revision(database_url) == HEAD
    assert _tables(database_url) == TABLES


def test_alembic_command_line_uses_the_settings(sqlite_url: str) -> None:
    env = {**os.environ, "DIABLO_DATABASE_URL": sqlite_url}
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run(
        [str(alembic), "upgrade", "head"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert current_revision(sqlite_url) == HEAD


def test_api_keys_revision_downgrades_alone(database_url: str) -> None:
    upgrade_database(database_url)
    downgrade_database(database_url, "0001")
    assert current_revision(database_url) == "0001"
    assert _tables(database_url) == TABLES - {"api_keys", "model_throughput"}
    upgrade_database(database_url)
    assert _tables(database_url) == TABLES


def test_file_example_count_revision_downgrades_alone(database_url: str) -> None:
    def file_columns() -> set[str]:
        engine = create_db_engine(database_url)
        try:
            with engine.connect() as connection:
                return {column["name"] for column in inspect(connection).get_columns("files")}
        finally:
            engine.dispose()

    upgrade_database(database_url)
    assert "num_examples" in file_columns()
    downgrade_database(database_url, "0003")
    assert current_revision(database_url) == "0003"
    assert "num_examples" not in file_columns()
    upgrade_database(database_url)
    assert "num_examples" in file_columns()


def test_parent_model_revision_downgrades_alone(database_url: str) -> None:
    def parent_columns() -> dict[str, bool]:
        engine = create_db_engine(database_url)
        try:
            with engine.connect() as connection:
                found = inspect(connection)
                return {
                    t: "parent_model" in {c["name"] for c in found.get_columns(t)}
                    for t in ("jobs", "adapters")
                }
        finally:
            engine.dispose()

    upgrade_database(database_url)
    assert parent_columns() == {"jobs": True, "adapters": True}
    downgrade_database(database_url, "0004")
    assert current_revision(database_url) == "0004"
    assert parent_columns() == {"jobs": False, "adapters": False}
    upgrade_database(database_url)
    assert parent_columns() == {"jobs": True, "adapters": True}


def test_paused_status_revision_downgrades_alone_and_requeues_paused_jobs(database_url: str) -> None:
    upgrade_database(database_url)
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO jobs (id, project_id, model, training_file, status, hyperparameters, "
                    "integrations, result_files, created_at, attempts, cancel_requested, pause_requested) "
                    "VALUES ('ftjob-p', 'default', 'm', 'file-t', 'paused', '{}', '[]', '[]', 1, 1, "
                    "false, false)"
                )
            )
        downgrade_database(database_url, "0005")
        with engine.connect() as connection:
            columns = {column["name"] for column in inspect(connection).get_columns("jobs")}
            status = connection.execute(text("SELECT status FROM jobs WHERE id = 'ftjob-p'")).scalar_one()
        assert "pause_requested" not in columns and status == "queued"
        upgrade_database(database_url)
        with engine.connect() as connection:
            assert "pause_requested" in {column["name"] for column in inspect(connection).get_columns("jobs")}
    finally:
        engine.dispose()


def test_evaluation_file_revision_downgrades_alone(database_url: str) -> None:
    def has_column() -> bool:
        engine = create_db_engine(database_url)
        try:
            with engine.connect() as connection:
                return "evaluation_file" in {c["name"] for c in inspect(connection).get_columns("jobs")}
        finally:
            engine.dispose()

    upgrade_database(database_url)
    assert has_column()
    downgrade_database(database_url, "0007")
    assert current_revision(database_url) == "0007" and not has_column()
    upgrade_database(database_url)
    assert has_column() and current_revision(database_url) == "0008"
