"""The dashboard's files as the API serves them: the page at ``/``, its modules, and errors left intact."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.routes.dashboard import DASHBOARD_DIR
from tests.api.conftest import assert_error, make_settings

MODULES = sorted(path.relative_to(DASHBOARD_DIR).as_posix() for path in DASHBOARD_DIR.glob("js/*.js"))
IMPORT = re.compile(r'^import .* from "\./([\w-]+\.js)";$', re.MULTILINE)


@pytest.fixture
def client(tmp_path: Path, sqlite_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path / "data", sqlite_url))) as test_client:
        yield test_client


def test_root_serves_the_page_that_loads_the_app(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/dashboard/js/app.js">' in response.text
    assert '<link rel="stylesheet" href="/dashboard/styles.css">' in response.text
    for page in ("jobs", "new", "models", "playground"):
        assert f'<a href="#/{page}" data-page="{page}">' in response.text
    assert "/" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("name", ["styles.css", *MODULES])
def test_static_files_are_served_and_revalidated(client: TestClient, name: str) -> None:
    response = client.get(f"/dashboard/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in ("text/css", "text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    assert response.text == (DASHBOARD_DIR / name).read_text()


def test_modules_import_only_local_modules_that_exist() -> None:
    assert "js/app.js" in MODULES
    for module in MODULES:
        text = (DASHBOARD_DIR / module).read_text()
        imports = [line for line in text.splitlines() if line.startswith("import ")]
        assert len(IMPORT.findall(text)) == len(imports), f"{module} imports something that is not ./x.js"
        for target in IMPORT.findall(text):
            assert (DASHBOARD_DIR / "js" / target).is_file(), f"{module} imports missing {target}"
        # Nothing may come from another host: the dashboard works without internet access.
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text


def test_missing_files_and_api_errors_keep_the_json_envelope(client: TestClient) -> None:
    assert_error(client.get("/dashboard/nothing.js"), 404, "not_found")
    # api/routes/dashboard.py exists beside the folder: a path climbing out of it must not reach it.
    assert_error(client.get("/dashboard/..%2Froutes%2Fdashboard.py"), 404, "not_found")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.post("/"), 405, "method_not_allowed")
