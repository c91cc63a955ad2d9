"""Who may do what: bearer API keys, 401 without a valid one, and every project's objects hidden (404) from
every other project in every route. Base models are shared."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.main import ROUTERS, create_app
from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from registry.api_keys import create_api_key, revoke_api_key
from registry.artifacts import add_checkpoint
from registry.base_models import DEFAULT_MODEL_ID
from registry.db import session_scope
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, assert_error, jsonl, make_settings, record_adapter

# Routes that name a model (possibly another project's adapter or checkpoint) in their body.
MODEL_IN_BODY = {("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/evaluations")}
PUBLIC_PATHS = ["/healthz", "/readyz", "/docs", "/openapi.json", "/", "/dashboard/styles.css"]


@dataclass
class World:
    """An app with auth on; project alpha owns a file, a job, a checkpoint and an adapter; beta owns none."""

    client: TestClient
    settings: Settings
    keys: dict[str, str]
    file_id: str
    job_id: str
    adapter: str
    checkpoint_model: str

    def headers(self, project: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[project]}"}

    def call(self, project: str | None, method: str, path: str, **kwargs: Any):
        headers = self.headers(project) if project else {}
        return self.client.request(method, path, headers=headers | kwargs.pop("headers", {}), **kwargs)


def _new_key(settings: Settings, project: str) -> str:
    with session_scope(settings.database_url) as session:
        return create_api_key(session, project)[1]


def _alpha_artifacts(settings: Settings, job_id: str) -> tuple[str, str]:
    """Record an adapter and a checkpoint of alpha's job, as a worker would; return their model names."""
    adapter = f"ft:{DEFAULT_MODEL_ID}:alpha:{job_id[-8:]}"
    checkpoint = f"{adapter}:ckpt-step-4"
    folder = settings.adapters_dir / "alpha-adapter"
    folder.mkdir(parents=True)
    (folder / WEIGHTS_FILE).write_bytes(b"weights")
    with session_scope(settings.database_url) as session:
        add_checkpoint(session, job_id, 4, checkpoint, storage_path=str(folder), metrics={"step": 4})
    record_adapter(settings, adapter, folder, size_bytes=7, job_id=job_id, project_id="alpha")
    return adapter, checkpoint


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    settings = make_settings(tmp_path / "data", database_url, auth="on")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        keys = {project: _new_key(settings, project) for project in ("alpha", "beta")}
        alpha = {"Authorization": f"Bearer {keys['alpha']}"}
        files = {"file": ("train.jsonl", jsonl([CHAT_EXAMPLE] * 4), "application/jsonl")}
        uploaded = client.post("/v1/files", files=files, data={"purpose": "fine-tune"}, headers=alpha)
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        body = {"model": "default", "training_file": file_id}
        job = client.post("/v1/fine_tuning/jobs", json=body, headers=alpha)
        assert job.status_code == 200, job.text
        adapter, checkpoint = _alpha_artifacts(settings, job.json()["id"])
        yield World(client, settings, keys, file_id, job.json()["id"], adapter, checkpoint)


def _api_routes() -> list[APIRoute]:
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]


def _v1_routes() -> list[tuple[str, str]]:
    routes = _api_routes()
    pairs = {(method, route.path) for route in routes for method in route.methods}
    return sorted((method, path) for method, path in pairs if path.startswith("/v1"))


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_v1_route_needs_a_valid_key(world: World) -> None:
    routes = _v1_routes()
    assert len(routes) >= 12
    revoked = _new_key(world.settings, "alpha")
    with session_scope(world.settings.database_url) as session:
        assert revoke_api_key(session, revoked)
    for method, path in routes:
        missing = world.call(None, method, _fill(path))
        assert_error(missing, 401, "missing_api_key")
        for bad in ("sk-diablo-not-a-key", revoked, "Basic dXNlcjpwYXNz"):
            response = world.call(None, method, _fill(path), headers={"Authorization": f"Bearer {bad}"})
            error = assert_error(response, 401, "invalid_api_key")
            assert error["type"] == "authentication_error" and bad not in error["message"]


def test_a_basic_or_empty_authorization_header_is_missing_authentication(world: World) -> None:
    for header in ("Basic dXNlcjpwYXNz", "Bearer", ""):
        response = world.client.get("/v1/files", headers={"Authorization": header})
        assert_error(response, 401, "missing_api_key")


def test_public_paths_need_no_key(world: World) -> None:
    for path in PUBLIC_PATHS:
        assert world.client.get(path).status_code == 200, path


def test_the_openapi_schema_declares_bearer_auth(world: World) -> None:
    schema = world.client.get("/openapi.json").json()
    assert {"type": "http", "scheme": "bearer"}.items() <= schema["components"]["securitySchemes"][
        "HTTPBearer"
    ].items()


def _owned_routes(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route that names one of alpha's objects, with the request that names it."""
    job = f"/v1/fine_tuning/jobs/{world.job_id}"
    messages = [{"role": "user", "content": "Hi"}]
    return [
        ("GET", f"/v1/files/{world.file_id}", {}),
        ("GET", f"/v1/files/{world.file_id}/content", {}),
        ("DELETE", f"/v1/files/{world.file_id}", {}),
        ("GET", job, {}),
        ("POST", f"{job}/cancel", {}),
        ("POST", f"{job}/pause", {}),
        ("POST", f"{job}/resume", {}),
        ("GET", f"{job}/events", {}),
        ("GET", f"{job}/checkpoints", {}),
        ("GET", f"/v1/models/{world.adapter}", {}),
        ("DELETE", f"/v1/models/{world.adapter}", {}),
        ("GET", f"/v1/models/{world.adapter}/content", {"params": {"format": "adapter"}}),
        *[
            (route, path, {"json": {"model": model, **body}})
            for route, path, body in (
                ("POST", "/v1/chat/completions", {"messages": messages}),
                ("POST", "/v1/chat/completions", {"messages": messages, "stream": True}),
                ("POST", "/v1/completions", {"prompt": "Hi"}),
                ("POST", "/v1/evaluations", {"file": world.file_id}),
            )
            for model in (world.adapter, world.checkpoint_model)
        ],
        ("POST", "/v1/evaluations", {"json": {"model": "default", "file": world.file_id}}),
    ]


def _templates(requests: list[tuple[str, str, dict[str, Any]]]) -> set[tuple[str, str]]:
    """The route templates that ``requests`` reach."""
    matched = set()
    for method, path, _ in requests:
        for route in _api_routes():
            if method in route.methods and route.path_regex.match(path):
                matched.add((method, route.path))
                break
    return matched


def test_every_route_with_an_object_id_is_checked_for_ownership(world: World) -> None:
    with_ids = {(method, path) for method, path in _v1_routes() if "{" in path}
    assert with_ids | MODEL_IN_BODY == _templates(_owned_routes(world))


def test_another_project_gets_404_for_every_owned_object(world: World) -> None:
    for method, path, kwargs in _owned_routes(world):
        response = world.call("beta", method, path, **kwargs)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["type"] == "not_found_error"
        assert world.keys["alpha"] not in response.text
    # Nothing was changed by the refused requests: alpha still sees everything, the job still queued.
    for method, path, _ in _owned_routes(world):
        if method == "GET":
            assert world.call("alpha", method, path).status_code == 200, path
    assert world.call("alpha", "GET", f"/v1/fine_tuning/jobs/{world.job_id}").json()["status"] == "queued"


def test_another_project_cannot_train_on_a_file_it_does_not_own(world: World) -> None:
    own = world.call("beta", "POST", "/v1/files", files={"file": ("t.jsonl", jsonl([CHAT_EXAMPLE] * 4))},
                     data={"purpose": "fine-tune"}).json()["id"]  # fmt: skip
    for body, param in (
        ({"training_file": world.file_id}, "training_file"),
        ({"training_file": own, "validation_file": world.file_id}, "validation_file"),
    ):
        response = world.call("beta", "POST", "/v1/fine_tuning/jobs", json={"model": "default", **body})
        error = assert_error(response, 400, "file_not_found", param)
        unknown = world.call("beta", "POST", "/v1/fine_tuning/jobs", json={"model": "default", **body}
                             | {param: "file-unknown"})  # fmt: skip
        assert assert_error(unknown, 400, "file_not_found", param)["message"] == error["message"].replace(
            world.file_id, "file-unknown"
        )


def test_lists_show_only_the_callers_objects_and_base_models_are_shared(world: World) -> None:
    for path in ("/v1/files", "/v1/fine_tuning/jobs"):
        assert world.call("beta", "GET", path).json()["data"] == []
        assert len(world.call("alpha", "GET", path).json()["data"]) == 1
    beta_models = [model["id"] for model in world.call("beta", "GET", "/v1/models").json()["data"]]
    alpha_models = [model["id"] for model in world.call("alpha", "GET", "/v1/models").json()["data"]]
    assert beta_models == [DEFAULT_MODEL_ID]
    assert set(alpha_models) == {DEFAULT_MODEL_ID, world.adapter}
    for project in ("alpha", "beta"):
        assert world.call(project, "GET", "/v1/models/default").json()["owned_by"] == "system"


def test_objects_are_created_in_the_callers_project(world: World) -> None:
    job = world.call("alpha", "GET", f"/v1/fine_tuning/jobs/{world.job_id}").json()
    assert job["organization_id"] == "alpha"
    adapter = world.call("alpha", "GET", f"/v1/models/{world.adapter}").json()
    assert adapter["owned_by"] == "alpha"


def test_auth_off_puts_every_request_in_the_default_project(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path / "data", sqlite_url, auth="off")
    with TestClient(create_app(settings)) as client:
        files = {"file": ("train.jsonl", jsonl([CHAT_EXAMPLE] * 4), "application/jsonl")}
        response = client.post("/v1/files", files=files, data={"purpose": "fine-tune"})
        assert response.status_code == 200, response.text
        job = client.post(
            "/v1/fine_tuning/jobs", json={"model": "default", "training_file": response.json()["id"]}
        )
        assert job.json()["organization_id"] == "default"
        anyone = client.get("/v1/files", headers={"Authorization": "Bearer whatever"})
        assert [item["id"] for item in anyone.json()["data"]] == [response.json()["id"]]
