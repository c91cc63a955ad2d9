"""The dashboard in a real browser: the API (uvicorn) and a Celery worker on SQLite, driven by Chromium.

``service`` starts both processes once per module on a fresh data folder holding the tiny local base model
``tiny-llama``; ``page`` opens a Chromium tab (Debian's ``/usr/bin/chromium`` driven by Playwright) and
fails the test on any uncaught script error. Screenshots go to ``$DIABLO_SCREENSHOT_DIR`` when it is set,
else to the test's temporary folder (the docs' screenshots come from ``scripts/dashboard_screenshots.py``,
on the real default model).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from registry.api_keys import create_api_key
from registry.db import session_scope
from registry.settings import Settings
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer
from tests.process_helpers import free_port, kill_group, start_logged, wait_for_http
from tests.worker.worker_process import REPO_ROOT, start_worker, stop_worker

CHROMIUM = "/usr/bin/chromium"
# No network beyond loopback and no background services: the page must work offline.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TINY_MODEL = "tiny-llama"
PROJECT = "dashboard"
STARTUP_TIMEOUT_S = 180.0
# Playwright's assertions wait 5 s by default; on a loaded machine Chromium, the API and a training worker
# share the CPUs, so a page update may take longer. The bound only limits how long a failure takes to show.
expect.set_options(timeout=30_000)


@dataclass
class Service:
    """The running API and worker: where to reach them and where their logs are."""

    base_url: str
    data_dir: Path
    logs: Path
    api_key: str
    api: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]

    def output(self) -> str:
        """The tail of each process's log, for assertion messages."""
        logs = sorted(self.logs.glob("*.log"))
        return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in logs)


def install_tiny_model(models_dir: Path) -> None:
    """Save a tiny random Llama with a byte-level ChatML tokenizer as the local base model ``tiny-llama``."""
    directory = models_dir / TINY_MODEL
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def service_env(data_dir: Path) -> dict[str, str]:
    """The settings of both processes: SQLite registry and broker under ``data_dir``, CPU, ``tiny-llama``."""
    return {
        "DIABLO_DATA_DIR": str(data_dir),
        "DIABLO_QUEUE_NAME": f"diablo-test-{secrets.token_hex(6)}",
        "DIABLO_DEVICE": "cpu",
        # The API serves one base model (and its adapters): the tiny one.
        "DIABLO_DEFAULT_MODEL": TINY_MODEL,
        # fp32: two models answering at once share batches, and their answers are compared with the API's.
        "DIABLO_INFERENCE_DTYPE": "fp32",
        "DIABLO_CHECKPOINT_EVERY": "25",
        "DIABLO_HEARTBEAT_INTERVAL_S": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }


def project_key(data_dir: Path) -> str:
    """A new API key of the project ``dashboard`` in the (already migrated) registry under ``data_dir``."""
    with session_scope(Settings(data_dir=data_dir).database_url) as session:
        return create_api_key(session, PROJECT)[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API on a free loopback port and one worker; the API migrates before the worker starts."""
    root = tmp_path_factory.mktemp("dashboard")
    data_dir = root / "data"
    install_tiny_model(data_dir / "models")
    env = service_env(data_dir)
    port = free_port()
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("DIABLO_")}
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    api = start_logged(command, inherited | env | {"PYTHONPATH": str(REPO_ROOT)}, root / "api.log")
    worker = None
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout_s=STARTUP_TIMEOUT_S)
        worker = start_worker(env, env["DIABLO_QUEUE_NAME"], root / "worker.log")
        yield Service(f"http://127.0.0.1:{port}", data_dir, root, project_key(data_dir), api, worker)
    finally:
        if worker is not None:
            stop_worker(worker, timeout=30)
        kill_group(api)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (Playwright's own browsers are never downloaded)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab at a desktop size; an uncaught script error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert errors == [], f"script errors in the dashboard: {errors}"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the test saves its screenshots."""
    directory = Path(os.environ.get("DIABLO_SCREENSHOT_DIR") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory
