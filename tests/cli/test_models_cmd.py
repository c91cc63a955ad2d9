"""``diablo models list|delete`` against the real API, with an adapter registered as a worker would."""

from __future__ import annotations

import json

import pytest

from registry.artifacts import register_adapter
from registry.base_models import DEFAULT_MODEL_ID
from registry.db import session_scope
from tests.cli.conftest import Server, diablo, list_ids_and_table

pytestmark = pytest.mark.integration
ADAPTER = f"ft:{DEFAULT_MODEL_ID}:cli:0123456789abcdef"


def add_adapter(server: Server) -> None:
    folder = server.settings.adapters_dir / "ftjob-cli"
    folder.mkdir(parents=True)
    (folder / "adapter.safetensors").write_bytes(b"weights")
    with session_scope(server.settings.database_url) as session:
        register_adapter(
            session, name=ADAPTER, job_id=None, base_model=DEFAULT_MODEL_ID,
            storage_path=str(folder), sha256="0" * 64, size_bytes=7,
        )  # fmt: skip


def test_list_shows_base_and_fine_tuned_models(server: Server) -> None:
    add_adapter(server)
    ids, table = list_ids_and_table(server, "models")
    assert ids == [DEFAULT_MODEL_ID, ADAPTER]
    assert DEFAULT_MODEL_ID in table and ADAPTER in table and "system" in table


def test_delete_a_fine_tuned_model(server: Server) -> None:
    add_adapter(server)
    deleted = diablo(server, "models", "delete", ADAPTER)
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout == f"Deleted {ADAPTER}\n"
    assert not (server.settings.adapters_dir / "ftjob-cli").exists()
    listed = json.loads(diablo(server, "models", "list", "--json").stdout)
    assert [model["id"] for model in listed["data"]] == [DEFAULT_MODEL_ID]

    again = diablo(server, "models", "delete", ADAPTER, "--json")
    assert again.exit_code == 1 and "model_not_found" in again.stderr
    base = diablo(server, "models", "delete", DEFAULT_MODEL_ID)
    assert base.exit_code == 1 and "model_not_deletable" in base.stderr
