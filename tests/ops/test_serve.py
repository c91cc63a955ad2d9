"""``diablo serve`` (what ``make run`` runs) with the embedded defaults: SQLite registry, SQLite broker.

The default model is converted once per session by the same check ``serve`` runs, into a shared folder that
each test's fresh data dir links to; ``serve`` still runs its check against it before starting workers.
The last test runs the same command against Postgres and Redis: only the two URLs change.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.process_helpers import (
    child_pids,
    diablo_serve,
    embedded_env,
    is_running,
    link_models,
    wait_for_text,
    wait_until_serving,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STARTUP_TIMEOUT_S = 300
INSPECT_TIMEOUT_S = 60


@pytest.fixture
def data_dir(tmp_path: Path, converted_models: Path) -> Path:
    return link_models(tmp_path / "data", converted_models)


def test_serve_prints_where_things_are_and_ctrl_c_stops_everything(data_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with diablo_serve(embedded_env(data_dir), log) as (serve, base_url):
        output = wait_until_serving(log, STARTUP_TIMEOUT_S)
        assert httpx.get(f"{base_url}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{base_url}/readyz", timeout=10).status_code == 200
        assert f"{base_url}/docs" in output and str(data_dir) in output
        assert (
            f"sqlite:///{data_dir}/registry.db" in output and f"sqla+sqlite:///{data_dir}/broker.db" in output
        )
        assert "curl -s -F purpose=fine-tune -F file=@" in output and f"{base_url}/v1/files" in output
        children = child_pids(serve.pid)
        assert len(children) == 2  # the API and one worker
        assert all(os.getpgid(pid) == pid for pid in children)
        os.killpg(serve.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert serve.wait(timeout=60) == 0
    assert not [pid for pid in children if is_running(pid)]
    assert (data_dir / "registry.db").is_file()


def test_serve_exits_nonzero_naming_the_child_that_died(data_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with socket.socket() as taken:
        # The port is in use, so uvicorn exits right after it starts.
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with diablo_serve(embedded_env(data_dir), log, port=port) as (serve, _):
            assert serve.wait(timeout=STARTUP_TIMEOUT_S) == 1
    output = log.read_text()
    assert "api (pid" in output and "exited unexpectedly" in output
    assert "curl" not in output


def test_serve_without_workers_starts_the_api_alone(tmp_path: Path) -> None:
    log, data_dir = tmp_path / "serve.log", tmp_path / "data"
    with diablo_serve(embedded_env(data_dir), log, "--no-worker") as (serve, _):
        output = wait_for_text(log, "Ctrl-C", timeout_s=STARTUP_TIMEOUT_S)
        assert "0 on queue 'diablo'" in output
        children = child_pids(serve.pid)
        assert len(children) == 1
        assert not (data_dir / "models").exists()  # the API never needs the model
        os.killpg(serve.pid, signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    assert not is_running(children[0])


def test_serve_workers_share_one_redis_queue_with_postgres(
    env: dict[str, str], converted_models: Path, tmp_path: Path
) -> None:
    link_models(Path(env["DIABLO_DATA_DIR"]), converted_models)
    log, queue = tmp_path / "serve.log", env["DIABLO_QUEUE_NAME"]
    with diablo_serve(env, log, "--workers", "2") as (serve, _):
        nodes = [f"{name}@{socket.gethostname()}" for name in ("worker1", "worker2")]
        for node in nodes:
            wait_for_text(log, f"{node} ready.", timeout_s=STARTUP_TIMEOUT_S)
        output = log.read_text()
        assert env["DIABLO_BROKER_URL"] in output and f"2 on queue '{queue}'" in output
        inspect = [sys.executable, "-m", "celery", "-A", "worker.celery_app:app", "inspect", "active_queues"]
        # Addressed to both workers, the command returns once both replied; the timeout only bounds a hang
        # (a broadcast to all would wait out the whole timeout, and miss a worker slower than that).
        result = subprocess.run(
            [*inspect, "--json", "-d", ",".join(nodes), "--timeout", str(INSPECT_TIMEOUT_S)],
            env=env,
            capture_output=True,
            text=True,
            timeout=INSPECT_TIMEOUT_S + 120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        replies = json.loads(result.stdout.strip().splitlines()[-1])
        assert {node.split("@")[0] for node in replies} == {"worker1", "worker2"}
        assert all([q["name"] for q in queues] == [queue] for queues in replies.values())
        os.killpg(serve.pid, signal.SIGINT)
        assert serve.wait(timeout=60) == 0
