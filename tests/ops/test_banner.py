"""What diablo serve prints: masked URLs, and a curl session that runs as printed."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from rich.console import Console

from diablo_cli.banner import curl_example, display_host, mask_password, print_banner
from registry.settings import Settings


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+psycopg://diablo:s3cr%40t@db:5432/diablo",
            "postgresql+psycopg://diablo:***@db:5432/diablo",
        ),
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("sqlite:////data/registry.db", "sqlite:////data/registry.db"),
        ("sqla+sqlite:////data/broker.db", "sqla+sqlite:////data/broker.db"),
    ],
)
def test_mask_password(url: str, masked: str) -> None:
    assert mask_password(url) == masked


@pytest.mark.parametrize(
    ("host", "shown"), [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("10.0.0.2", "10.0.0.2")]
)
def test_display_host(host: str, shown: str) -> None:
    assert display_host(host) == shown


class RecordingHandler(BaseHTTPRequestHandler):
    """Answers like the API's create routes and records what each request carried."""

    requests: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append((self.path, self.headers["Content-Type"], body))
        answer = {"id": "file-abc"} if self.path == "/v1/files" else {"id": "ftjob-xyz"}
        self._send(answer)

    def do_GET(self) -> None:
        self.requests.append((self.path, "", b""))
        self._send({"object": "fine_tuning.job"})

    def _send(self, answer: dict[str, str]) -> None:
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def stub_api() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    RecordingHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", RecordingHandler.requests
    server.shutdown()
    server.server_close()


def test_curl_example_runs_as_printed(stub_api: tuple[str, list], tmp_path: Path) -> None:
    base_url, requests = stub_api
    (tmp_path / "train.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n')
    script = "set -euo pipefail\n" + "\n".join(curl_example(base_url, "default", Path("train.jsonl")))
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    job_url = "/v1/fine_tuning/jobs/ftjob-xyz"
    paths = [path for path, _, _ in requests]
    assert paths == ["/v1/files", "/v1/fine_tuning/jobs", job_url, f"{job_url}/events"]
    _, upload_type, upload = requests[0]
    assert upload_type.startswith("multipart/form-data")
    assert b'name="purpose"\r\n\r\nfine-tune' in upload and b'"completion": "2"' in upload
    _, job_type, job = requests[1]
    assert job_type == "application/json"
    expected = {"model": "default", "training_file": "file-abc", "hyperparameters": {"n_epochs": 1}}
    assert json.loads(job) == expected


def test_banner_names_every_endpoint_without_passwords(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql+psycopg://diablo:topsecret@db:5432/diablo",
        broker_url="redis://:alsosecret@redis:6379/0",
    )
    console = Console(record=True, width=100)
    print_banner(console, settings, "http://127.0.0.1:8123", workers=2)
    text = console.export_text()
    assert "http://127.0.0.1:8123/docs" in text and str(tmp_path) in text
    assert "postgresql+psycopg://diablo:***@db:5432/diablo" in text and "redis://:***@redis:6379/0" in text
    assert "secret" not in text
    assert "curl -s -F purpose=fine-tune -F file=@" in text and "http://127.0.0.1:8123/v1/files" in text
