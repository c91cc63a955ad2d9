"""A real API served by uvicorn on loopback (SQLite, in-memory broker), and the CLI invoked against it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from click.testing import Result
from fastapi import FastAPI, Request, Response
from typer.testing import CliRunner

from api.main import create_app
from diablo_cli.main import app as cli_app
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, jsonl, make_settings


@dataclass
class Server:
    """A served app: its root URL, its settings, and the Authorization header of every request."""

    url: str
    settings: Settings
    authorizations: list[str | None] = field(default_factory=list)


def free_port() -> int:
    """A loopback port that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def cli_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's DIABLO_DATA_DIR: a fresh folder, so that no development key of a local service leaks in."""
    path = tmp_path / "cli-data"
    monkeypatch.setenv("DIABLO_DATA_DIR", str(path))
    return path


@pytest.fixture
def serve_app() -> Iterator[Callable[[FastAPI], str]]:
    """Serve apps with uvicorn in threads; each call returns the app's root URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: FastAPI) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(tmp_path: Path, sqlite_url: str, serve_app: Callable[[FastAPI], str]) -> Server:
    """The real API on a fresh SQLite database, recording the Authorization header it receives."""
    settings = make_settings(tmp_path / "data", sqlite_url)
    app = create_app(settings)
    authorizations: list[str | None] = []

    @app.middleware("http")
    async def record_authorization(request: Request, call_next: Callable[..., Awaitable[Response]]):
        authorizations.append(request.headers.get("authorization"))
        return await call_next(request)

    return Server(serve_app(app), settings, authorizations)


def diablo(server: Server | str, *args: str, **kwargs) -> Result:
    """Run ``diablo ARGS --base-url <server or URL>`` in-process; stdout and stderr are kept apart."""
    url = server if isinstance(server, str) else server.url
    return CliRunner().invoke(cli_app, [*args, "--base-url", url], **kwargs)


def list_ids_and_table(server: Server, group: str) -> tuple[list[str], str]:
    """``diablo <group> list`` twice: the ids it prints with ``--json``, and the table it prints without."""
    listed = diablo(server, group, "list", "--json")
    assert listed.exit_code == 0, listed.output
    table = diablo(server, group, "list")
    assert table.exit_code == 0, table.output
    return [item["id"] for item in json.loads(listed.stdout)["data"]], table.stdout


@pytest.fixture
def training_path(tmp_path: Path) -> Path:
    """A valid JSONL file of four chat examples."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl([CHAT_EXAMPLE] * 4))
    return path


def upload(server: Server, path: Path) -> str:
    """Upload ``path`` through the CLI and return the file id it printed."""
    result = diablo(server, "files", "upload", str(path))
    assert result.exit_code == 0, result.output
    return result.stdout.strip()
