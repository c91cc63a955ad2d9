"""``diablo keys create|list|revoke`` on a real registry, and the keys they make used against a real API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from fastapi import FastAPI
from typer.testing import CliRunner

from api.main import create_app
from diablo_cli.main import app as cli_app
from registry.api_keys import SECRET_PREFIX, verify_api_key
from registry.db import session_scope
from tests.api.conftest import make_settings
from tests.cli.conftest import diablo


def keys(database_url: str, *args: str) -> Result:
    """Run ``diablo keys ARGS`` against the registry at ``database_url``."""
    return CliRunner().invoke(cli_app, ["keys", *args], env={"DIABLO_DATABASE_URL": database_url})


def created_key(database_url: str, *args: str) -> str:
    result = keys(database_url, "create", *args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()[-1]


@pytest.fixture
def auth_server(tmp_path: Path, sqlite_url: str, serve_app: Callable[[FastAPI], str]) -> str:
    """The API with auth on, on the registry that the key commands use."""
    return serve_app(create_app(make_settings(tmp_path / "data", sqlite_url, auth="on")))


def test_create_prints_the_key_alone_on_the_last_line(sqlite_url: str) -> None:
    result = keys(sqlite_url, "create", "--project", "alpha", "--name", "ci")
    assert result.exit_code == 0, result.output
    *explanation, secret = result.stdout.splitlines()
    assert explanation and "alpha" in explanation[0] and "shown once" in explanation[-1]
    assert secret.startswith(SECRET_PREFIX) and " " not in secret
    with session_scope(sqlite_url) as session:
        assert verify_api_key(session, secret) == "alpha"


def test_an_invalid_project_name_exits_2(sqlite_url: str) -> None:
    result = keys(sqlite_url, "create", "--project", "no spaces")
    assert result.exit_code == 2 and "project must be" in result.stderr


def test_list_shows_prefixes_never_secrets(sqlite_url: str) -> None:
    alpha, beta = created_key(sqlite_url, "--project", "alpha"), created_key(sqlite_url, "--project", "beta")
    listed = keys(sqlite_url, "list", "--json")
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.stdout)["data"]
    assert [record["project_id"] for record in records] == ["beta", "alpha"]
    assert alpha not in listed.stdout and beta not in listed.stdout
    assert alpha.startswith(records[1]["prefix"])
    only_alpha = json.loads(keys(sqlite_url, "list", "--project", "alpha", "--json").stdout)["data"]
    assert [record["id"] for record in only_alpha] == [records[1]["id"]]
    table = keys(sqlite_url, "list")
    assert records[0]["id"] in table.stdout and f"{records[0]['prefix']}..." in table.stdout


def test_a_created_key_works_until_it_is_revoked(sqlite_url: str, auth_server: str) -> None:
    secret = created_key(sqlite_url, "--project", "alpha")
    assert diablo(auth_server, "files", "list", "--api-key", secret).exit_code == 0
    prefix = json.loads(keys(sqlite_url, "list", "--json").stdout)["data"][0]["prefix"]
    revoked = keys(sqlite_url, "revoke", prefix)
    assert revoked.exit_code == 0 and secret not in revoked.stdout, revoked.output
    refused = diablo(auth_server, "files", "list", "--api-key", secret)
    assert refused.exit_code == 1 and "HTTP 401" in refused.stderr and "invalid_api_key" in refused.stderr
    assert keys(sqlite_url, "list", "--all", "--json").stdout.count('"revoked_at": null') == 0
    again = keys(sqlite_url, "revoke", prefix)
    assert again.exit_code == 1 and "no active API key matches" in again.stderr


def test_without_a_key_the_cli_says_how_to_get_one(auth_server: str) -> None:
    result = diablo(auth_server, "files", "list", env={"DIABLO_API_KEY": None})
    assert result.exit_code == 1
    assert "missing_api_key" in result.stderr and "diablo keys create --project NAME" in result.stderr
