"""Start and stop a real Celery worker process for the integration tests."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("succeeded", "failed", "cancelled")


def worker_command(queue: str) -> list[str]:
    """The documented worker command, with a unique node name so parallel test runs do not clash."""
    celery = Path(sys.executable).with_name("celery")
    node = f"test-{secrets.token_hex(4)}@%h"
    command = f"-A worker.celery_app:app worker --pool solo --concurrency 1 -Q {queue} --loglevel INFO"
    return [str(celery), *command.split(), "-n", node, "--without-gossip", "--without-mingle"]


def start_worker(env: dict[str, str], queue: str, log_path: Path) -> subprocess.Popen[bytes]:
    """Start a worker with ``env`` (DIABLO_* variables) on top of a clean environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DIABLO_")}
    full_env = base | env | {"PYTHONPATH": str(REPO_ROOT)}
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(worker_command(queue), cwd=REPO_ROOT, env=full_env, stdout=log, stderr=log)


def stop_worker(process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """Ask the worker for a warm shutdown (SIGTERM) and wait for it; kill it if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_for(
    condition: Callable[[], Any], timeout: float, process: subprocess.Popen[bytes], log_path: Path
) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail with the worker's log on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}:\n{log_path.read_text()[-5000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s; worker log:\n{log_path.read_text()[-5000:]}")
