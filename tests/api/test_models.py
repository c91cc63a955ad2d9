"""/v1/models: base models and adapters, ids with "/" and ":", deleting adapters, their checkpoints and their
files."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.errors import APIError
from api.services.adapter_refs import adapter_ref
from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from registry.artifacts import add_checkpoint, checkpoint_model_name, fine_tuned_model_name, register_adapter
from registry.base_models import DEFAULT_MODEL_ID
from registry.db import session_scope
from registry.jobs import create_job
from registry.models import Checkpoint
from registry.settings import Settings
from tests.api.conftest import assert_error

ADAPTER = f"ft:{DEFAULT_MODEL_ID}:my-suffix:0123abcd"


def _register(settings: Settings, name: str = ADAPTER, project: str = "default") -> Path:
    """Record an adapter whose files lie in a folder under adapters_dir; returns the folder."""
    folder = settings.adapters_dir / name.replace("/", "_").replace(":", "_")
    folder.mkdir(parents=True)
    (folder / "adapter.safetensors").write_bytes(b"weights")
    with session_scope(settings.database_url) as session:
        register_adapter(
            session,
            name=name,
            job_id=None,
            base_model=DEFAULT_MODEL_ID,
            storage_path=str(folder),
            sha256="0" * 64,
            size_bytes=7,
            project_id=project,
        )
    return folder


def test_list_has_base_models_then_adapters(client: TestClient, settings: Settings) -> None:
    _register(settings)
    _register(settings, name=f"ft:{DEFAULT_MODEL_ID}::other-project", project="someone-else")
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    base, *adapters = listed["data"]
    assert base == {
        "id": DEFAULT_MODEL_ID,
        "object": "model",
        "created": base["created"],
        "owned_by": "system",
        "base_model": None,
        "job_id": None,
        "parent": None,
    }
    assert [(a["id"], a["owned_by"], a["base_model"]) for a in adapters] == [
        (ADAPTER, "default", DEFAULT_MODEL_ID)
    ]


def test_retrieve_ids_with_slashes_and_colons(client: TestClient, settings: Settings) -> None:
    _register(settings)
    adapter = client.get(f"/v1/models/{ADAPTER}").json()
    assert (adapter["id"], adapter["object"], adapter["base_model"]) == (ADAPTER, "model", DEFAULT_MODEL_ID)
    assert client.get(f"/v1/models/{DEFAULT_MODEL_ID}").json()["owned_by"] == "system"
    assert client.get("/v1/models/default").json()["id"] == DEFAULT_MODEL_ID
    escaped = client.get(f"/v1/models/{ADAPTER.replace('/', '%2F')}")
    assert escaped.json()["id"] == ADAPTER


def test_local_checkpoints_are_listed(client: TestClient, settings: Settings) -> None:
    for name in ("tiny-llama", "SmolLM2-135M-Instruct", ".hidden", "no-config"):
        (settings.data_dir / "models" / name).mkdir(parents=True)
    for name in ("tiny-llama", "SmolLM2-135M-Instruct", ".hidden"):
        (settings.data_dir / "models" / name / "config.json").write_text("{}")
    ids = [model["id"] for model in client.get("/v1/models").json()["data"]]
    assert ids == [DEFAULT_MODEL_ID, "tiny-llama"]


def test_delete_adapter_removes_record_and_files(client: TestClient, settings: Settings) -> None:
    folder = _register(settings)
    response = client.delete(f"/v1/models/{ADAPTER}")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": ADAPTER, "object": "model", "deleted": True}
    assert not folder.exists()
    assert list(settings.adapters_dir.iterdir()) == []
    assert_error(client.get(f"/v1/models/{ADAPTER}"), 404, "model_not_found", "model")
    assert_error(client.delete(f"/v1/models/{ADAPTER}"), 404, "model_not_found", "model")


def test_adapter_files_outside_adapters_dir_are_left_alone(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with session_scope(settings.database_url) as session:
        register_adapter(
            session,
            name=ADAPTER,
            job_id=None,
            base_model=DEFAULT_MODEL_ID,
            storage_path=str(outside),
            sha256="0" * 64,
            size_bytes=0,
        )
    assert client.delete(f"/v1/models/{ADAPTER}").json()["deleted"] is True
    assert outside.is_dir()


def test_base_models_cannot_be_deleted_and_unknown_is_404(client: TestClient) -> None:
    error = assert_error(client.delete(f"/v1/models/{DEFAULT_MODEL_ID}"), 403, "model_not_deletable", "model")
    assert "base model" in error["message"]
    assert_error(client.get("/v1/models/ft:nope:x:y"), 404, "model_not_found", "model")
    assert_error(client.get("/v1/models/some/hub-model"), 404, "model_not_found", "model")


def test_other_projects_adapters_are_invisible(client: TestClient, settings: Settings) -> None:
    _register(settings, project="someone-else")
    assert_error(client.get(f"/v1/models/{ADAPTER}"), 404, "model_not_found", "model")
    assert_error(client.delete(f"/v1/models/{ADAPTER}"), 404, "model_not_found", "model")


def test_deleting_a_model_stops_serving_its_checkpoints_and_removes_them(
    client: TestClient, settings: Settings
) -> None:
    with session_scope(settings.database_url) as session:
        job = create_job(session, model=DEFAULT_MODEL_ID, training_file="file-x")
        job_id = job.id
    name = fine_tuned_model_name(DEFAULT_MODEL_ID, job_id, "my-suffix")
    folder = _register(settings, name=name)
    steps = {}
    for step in (5, 10):
        steps[step] = settings.adapters_dir / job_id / "checkpoints" / f"step-{step}"
        steps[step].mkdir(parents=True)
        (steps[step] / WEIGHTS_FILE).write_bytes(b"checkpoint weights")
        with session_scope(settings.database_url) as session:
            add_checkpoint(
                session, job_id, step, checkpoint_model_name(name, step), storage_path=str(steps[step])
            )
    assert adapter_ref(settings, "default", f"{name}:ckpt-step-5") is not None  # served before
    assert client.delete(f"/v1/models/{name}").status_code == 200
    for step, path in steps.items():
        with pytest.raises(APIError) as refused:
            adapter_ref(settings, "default", f"{name}:ckpt-step-{step}")
        assert (refused.value.status, refused.value.code) == (404, "model_not_found")
        assert not path.exists()
    assert not folder.exists()
    assert not [p for p in settings.adapters_dir.iterdir() if p.name.startswith(".deleted-")]
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Checkpoint)) == 0
