"""Continuing from a fine-tuned model: ``model`` names a fine-tuned model or checkpoint of the project."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from diablo_core.methods.diablo.config import CONFIG_FILE, WEIGHTS_FILE
from registry.artifacts import add_checkpoint, register_adapter
from registry.base_models import DEFAULT_MODEL_ID
from registry.db import session_scope
from registry.jobs import create_job as insert_job
from registry.settings import Settings
from tests.api.conftest import assert_error, create_job

PARENT = f"ft:{DEFAULT_MODEL_ID}:parent:0123abcd"
LAYOUT = {"num_blocks": 8, "target_modules": ["q_proj", "v_proj"], "layers": [0, 2]}
DIABLO = "method.diablo.hyperparameters"


def _adapter_folder(settings: Settings, name: str) -> Path:
    folder = settings.adapters_dir / name.replace("/", "_").replace(":", "_")
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(json.dumps({"method": "diablo", **LAYOUT, "dropout": 0.05}))
    (folder / WEIGHTS_FILE).write_bytes(b"weights")
    return folder


def _register(settings: Settings, name: str = PARENT, project: str = "default", **extra: Any) -> None:
    folder = _adapter_folder(settings, name)
    with session_scope(settings.database_url) as session:
        register_adapter(
            session, name=name, job_id=None, base_model=DEFAULT_MODEL_ID, storage_path=str(folder),
            sha256="0" * 64, size_bytes=7, project_id=project, **extra,
        )  # fmt: skip


def _diablo(**hyperparameters: Any) -> dict[str, Any]:
    return {"method": {"type": "diablo", "diablo": {"hyperparameters": hyperparameters}}}


def test_a_job_continues_from_a_fine_tuned_model_with_its_layout(
    client: TestClient, settings: Settings
) -> None:
    _register(settings)
    response = create_job(client, model=PARENT, **_diablo(num_blocks=8, dropout=0.1))
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["model"], job["parent_model"]) == (DEFAULT_MODEL_ID, PARENT)
    resolved = job["method"]["diablo"]["hyperparameters"]
    assert {key: resolved[key] for key in LAYOUT} == LAYOUT  # the parent's, echoed
    assert resolved["dropout"] == 0.1  # not part of the layout: the request's
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["parent_model"] == PARENT


def test_a_conflicting_layout_is_400_naming_the_field(client: TestClient, settings: Settings) -> None:
    _register(settings)
    for field, value in [("num_blocks", 16), ("target_modules", ["q_proj"]), ("layers", [1])]:
        error = assert_error(
            create_job(client, model=PARENT, **_diablo(**{field: value})),
            400,
            "parent_layout_conflict",
            f"{DIABLO}.{field}",
        )
        assert PARENT in error["message"]


def test_a_checkpoint_name_is_a_parent_too(client: TestClient, settings: Settings) -> None:
    name = f"{PARENT}:ckpt-step-4"
    folder = _adapter_folder(settings, name)
    with session_scope(settings.database_url) as session:
        owner = insert_job(session, model=DEFAULT_MODEL_ID, training_file="file-x", project_id="default")
        add_checkpoint(session, owner.id, 4, name, storage_path=str(folder), metrics={})
    job = create_job(client, model=name).json()
    assert (job["model"], job["parent_model"]) == (DEFAULT_MODEL_ID, name)
    assert job["method"]["diablo"]["hyperparameters"]["num_blocks"] == 8


def test_another_projects_or_a_missing_model_is_404(client: TestClient, settings: Settings) -> None:
    other = f"ft:{DEFAULT_MODEL_ID}:theirs:99"
    _register(settings, name=other, project="someone-else")
    assert_error(create_job(client, model=other), 404, "model_not_found", "model")
    assert_error(create_job(client, model=f"{PARENT}:ckpt-step-1"), 404, "model_not_found", "model")
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_a_model_shows_its_parent(client: TestClient, settings: Settings) -> None:
    child = f"ft:{DEFAULT_MODEL_ID}:child:4567"
    _register(settings)
    _register(settings, name=child, parent_model=PARENT)
    assert client.get(f"/v1/models/{child}").json()["parent"] == PARENT
    assert client.get(f"/v1/models/{PARENT}").json()["parent"] is None
