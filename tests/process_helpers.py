"""Helpers for tests that start real processes: free ports, readiness polls, liveness by pid, and the
default model converted once per test session (shared by the ops and end-to-end tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from diablo_cli.serve import MODEL_CHECK
from registry.base_models import DEFAULT_CHECKPOINT_DIR

DIABLO = Path(sys.executable).parent / "diablo"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an unreaped child counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_for_file(path: Path, timeout_s: float = 30.0, nonempty: bool = False) -> Path:
    """Wait until ``path`` exists (and, with ``nonempty``, has content); return it."""
    deadline = time.monotonic() + timeout_s
    while not path.exists() or (nonempty and path.stat().st_size == 0):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.05)
    return path


def wait_for_text(path: Path, text: str, timeout_s: float) -> str:
    """Wait until the file at ``path`` contains ``text``; return the whole file."""
    deadline = time.monotonic() + timeout_s
    while True:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} not in {path} after {timeout_s} s:\n{content[-3000:]}")
        time.sleep(0.2)


def wait_for_http(url: str, timeout_s: float) -> httpx.Response:
    """Poll ``url`` until it answers at all (any status); return that response."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=5.0)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start_logged(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group with stdout and stderr appended to ``log``."""
    with open(log, "ab") as handle:
        return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, process_group=0)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process group started by ``start_logged`` unless it already ended (test cleanup)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def diablo_serve(
    env: dict[str, str], log: Path, *options: str, port: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``diablo serve <options>`` on ``port`` (default: a free one), its output in ``log``; yields the process
    and its base URL, and kills its process group when the block ends."""
    port = port or free_port()
    serve = start_logged([str(DIABLO), "serve", *options, "--port", str(port)], env, log)
    try:
        yield serve, f"http://127.0.0.1:{port}"
    finally:
        kill_group(serve)


def wait_until_serving(log: Path, timeout_s: float) -> str:
    """Wait for ``diablo serve``'s banner (the API answers), then a worker's ready line; returns the log."""
    wait_for_text(log, "Try it", timeout_s=timeout_s)
    return wait_for_text(log, " ready.", timeout_s=timeout_s)


def child_pids(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def link_models(data_dir: Path, models: Path) -> Path:
    """Create ``data_dir`` with its ``models`` folder linked to an already converted one; return it."""
    data_dir.mkdir(parents=True)
    (data_dir / "models").symlink_to(models, target_is_directory=True)
    return data_dir


def embedded_env(data_dir: Path) -> dict[str, str]:
    """This environment without any DIABLO_* setting but the data dir: every other value is the default."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIABLO_")}
    return {**env, "DIABLO_DATA_DIR": str(data_dir)}


def converted_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``models`` folder holding the default model, converted by the check that ``diablo serve`` runs.

    The folder lies in the session's base temporary directory, so every fixture that asks for it in one
    test session shares a single conversion.
    """
    data_dir = tmp_path_factory.getbasetemp() / "converted-default-model"
    if not (data_dir / "models" / DEFAULT_CHECKPOINT_DIR).is_dir():  # the conversion renames it into place
        command = [sys.executable, "-c", MODEL_CHECK, str(data_dir), "default"]
        subprocess.run(command, check=True, capture_output=True, timeout=600)
    return data_dir / "models"
