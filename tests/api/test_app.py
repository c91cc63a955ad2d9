"""The app as a whole: the error envelope on every failure, probes, docs, and a lazy, DB-free import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from registry.db import current_revision
from registry.settings import Settings
from tests.api.conftest import assert_error, make_settings


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    error = assert_error(client.delete("/v1/fine_tuning/jobs"), 405, "method_not_allowed")
    assert error["type"] == "invalid_request_error"


def test_malformed_json_body(client: TestClient) -> None:
    response = client.post(
        "/v1/fine_tuning/jobs", content=b'{"model": ', headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


def test_unhandled_errors_are_500_server_error(settings: Settings, caplog) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        error = assert_error(client.get("/boom"), 500, "internal_error")
    assert error["type"] == "server_error"
    assert "secret detail" not in error["message"]
    assert any("unhandled error on GET /boom" in record.getMessage() for record in caplog.records)


def test_bearer_keys_are_accepted(client: TestClient) -> None:
    response = client.get("/v1/files", headers={"Authorization": "Bearer sk-anything"})
    assert response.status_code == 200


def test_startup_migrates_and_creates_folders(client: TestClient, settings: Settings) -> None:
    assert current_revision(settings.database_url) is not None
    assert settings.files_dir.is_dir()
    assert settings.adapters_dir.is_dir()


def test_healthz_readyz_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "database": "ok", "broker": "ok"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/files", "/v1/fine_tuning/jobs", "/v1/models/{model_id}"} <= set(paths)


def test_readyz_503_names_the_unreachable_broker(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, sqlite_url, broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
    error = assert_error(response, 503, "not_ready", "broker")
    assert error["type"] == "server_error"
    body = response.json()
    assert (body["status"], body["database"]) == ("not_ready", "ok")
    assert body["broker"] != "ok"


def test_importing_the_app_touches_no_database(tmp_path: Path) -> None:
    data = tmp_path / "untouched"
    code = "import api.main; print(api.main.app.title)"
    env = {"DIABLO_DATA_DIR": str(data), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "DiaBlo" in result.stdout
    assert not data.exists()
