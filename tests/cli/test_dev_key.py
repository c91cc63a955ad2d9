"""The development key of ``make run``: created once, saved 0600, printed in the banner, used by the CLI."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from rich.console import Console

from api.main import create_app
from diablo_cli.banner import curl_example, curl_key, print_banner
from diablo_cli.dev_key import (
    DEV_KEY_FILE,
    dev_key_for_banner,
    ensure_dev_key,
    is_loopback_url,
    read_dev_key,
    write_secret,
)
from registry.api_keys import create_api_key, masked_key, revoke_api_key, verify_api_key
from registry.db import session_scope, upgrade_database
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, jsonl, make_settings
from tests.cli.conftest import Server, diablo


def _settings(tmp_path: Path, sqlite_url: str, auth: str = "on") -> Settings:
    settings = make_settings(tmp_path / "data", sqlite_url, auth=auth)
    upgrade_database(sqlite_url)
    return settings


def test_the_first_start_creates_a_key_later_starts_reuse_it(tmp_path: Path, sqlite_url: str) -> None:
    settings = _settings(tmp_path, sqlite_url)
    key = ensure_dev_key(settings)
    assert key is not None and read_dev_key(settings.data_dir) == key
    assert stat.S_IMODE((settings.data_dir / DEV_KEY_FILE).stat().st_mode) == 0o600
    assert ensure_dev_key(settings) == key
    with session_scope(sqlite_url) as session:
        assert verify_api_key(session, key) == "default"


def test_only_the_start_that_creates_the_key_shows_it_in_full(tmp_path: Path, sqlite_url: str) -> None:
    settings = _settings(tmp_path, sqlite_url)
    key, shown = dev_key_for_banner(settings)
    assert key is not None and shown
    assert dev_key_for_banner(settings) == (key, False)
    with session_scope(settings.database_url) as session:
        assert revoke_api_key(session, key)
    replaced, shown = dev_key_for_banner(settings)
    assert replaced not in (None, key) and shown  # a new key is shown once too


def test_a_revoked_development_key_is_replaced(tmp_path: Path, sqlite_url: str) -> None:
    settings = _settings(tmp_path, sqlite_url)
    first = ensure_dev_key(settings)
    with session_scope(sqlite_url) as session:
        assert first is not None and revoke_api_key(session, first)
    second = ensure_dev_key(settings)
    assert second not in (None, first) and read_dev_key(settings.data_dir) == second


def test_no_key_is_made_when_auth_is_off_or_the_project_has_keys(tmp_path: Path, sqlite_url: str) -> None:
    assert ensure_dev_key(_settings(tmp_path, sqlite_url, auth="off")) is None
    settings = _settings(tmp_path, sqlite_url)
    with session_scope(sqlite_url) as session:
        create_api_key(session, "default", "made by hand")
    assert ensure_dev_key(settings) is None and not (settings.data_dir / DEV_KEY_FILE).exists()


def test_write_secret_replaces_the_file_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("old")
    path.chmod(0o644)
    write_secret(path, "sk-diablo-new")
    assert path.read_text() == "sk-diablo-new\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [entry.name for entry in tmp_path.iterdir()] == ["key"]


def test_the_first_banner_shows_the_key_later_ones_mask_it_and_their_curl_example_runs(
    tmp_path: Path, sqlite_url: str, serve_app: Callable[[FastAPI], str]
) -> None:
    settings = _settings(tmp_path, sqlite_url)
    key = ensure_dev_key(settings)
    assert key is not None
    console = Console(record=True, width=300)
    print_banner(console, settings, "http://127.0.0.1:8123", workers=1, api_key=key)
    text = console.export_text()
    assert key in text and str(settings.data_dir / DEV_KEY_FILE) in text
    assert text.count(f'-H "Authorization: Bearer {key}"') == 4
    later = Console(record=True, width=300)
    print_banner(later, settings, "http://127.0.0.1:8123", workers=1, api_key=key, key_shown=False)
    later_text = later.export_text()
    assert key not in later_text and masked_key(key) in later_text  # later starts' logs never hold it
    base_url = serve_app(create_app(settings))
    train = tmp_path / "train.jsonl"
    train.write_bytes(jsonl([CHAT_EXAMPLE] * 4))
    lines = curl_example(base_url, "default", train, curl_key(settings, key, key_shown=False))
    assert key not in "\n".join(lines)  # the example reads the key from its file instead
    script = "set -euo pipefail\n" + "\n".join(lines[:2]) + f"\ncurl -sf -H 'Authorization: Bearer {key}' "
    script += f"{base_url}/v1/fine_tuning/jobs/$JOB_ID"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["organization_id"] == "default"


def test_the_cli_falls_back_to_the_development_key(server: Server, cli_data_dir: Path) -> None:
    write_secret(cli_data_dir / DEV_KEY_FILE, "sk-diablo-local")
    assert diablo(server, "files", "list", env={"DIABLO_API_KEY": None}).exit_code == 0
    assert diablo(server, "files", "list", "--api-key", "sk-diablo-given").exit_code == 0
    assert server.authorizations == ["Bearer sk-diablo-local", "Bearer sk-diablo-given"]


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://127.3.2.1:8000/v1", True),
        ("http://[::1]:8000", True),
        ("http://localhost:8000", True),
        ("http://LOCALHOST.:8000", True),
        ("http://10.0.0.5:8000", False),
        ("https://api.example.com", False),
        ("http://localhost.example.com:8000", False),
        ("http://127.0.0.1.nip.io:8000", False),
        ("http://user@[2001:db8::1]:8000", False),
    ],
)
def test_only_loopback_urls_count_as_local(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_the_development_key_is_never_sent_to_a_remote_url(
    server: Server, cli_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_secret(cli_data_dir / DEV_KEY_FILE, "sk-diablo-local")
    # The loopback server stands in for a remote one: httpx sends requests for api.example.com through it
    # as a proxy, so the headers a remote host would receive arrive here.
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    remote = diablo("http://api.example.com", "files", "list", env={"DIABLO_API_KEY": None})
    assert remote.exit_code == 0, remote.output
    local = diablo(
        server.url.replace("127.0.0.1", "localhost"), "files", "list", env={"DIABLO_API_KEY": None}
    )
    assert local.exit_code == 0, local.output
    assert server.authorizations == [None, "Bearer sk-diablo-local"]


def test_migrate_ensure_key_creates_the_first_key_once_then_says_where(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from diablo_cli.main import app
    from registry.settings import get_settings

    data_dir = tmp_path / "data"
    for name, value in {"DIABLO_DATA_DIR": str(data_dir), "DIABLO_DATABASE_URL": sqlite_url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DIABLO_AUTH", "on")
    get_settings.cache_clear()
    try:
        first = CliRunner().invoke(app, ["migrate", "--ensure-key"])
        again = CliRunner().invoke(app, ["migrate", "--ensure-key"])
    finally:
        get_settings.cache_clear()
    assert first.exit_code == 0, first.output
    key = read_dev_key(data_dir)
    assert key is not None and first.output.rstrip().endswith(key)
    assert "Created an API key for project 'default'" in first.output
    assert key not in again.output and f"is in {data_dir / DEV_KEY_FILE}" in again.output
    with session_scope(sqlite_url) as session:
        assert verify_api_key(session, key) == "default"
