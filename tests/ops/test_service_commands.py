"""Each docker-compose.yml service command, run directly against the local Postgres and Redis.

No Docker engine runs here: the commands are read from the compose file, pointed at this venv's Python, a
fresh Postgres database, a Redis database with a queue of their own and a temporary data dir, and then run
as the containers would run them.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect

from diablo_cli.banner import curl_example
from registry.models import Base
from tests.ops.compose_file import ROOT, compose_service
from tests.process_helpers import free_port, kill_group, start_logged, wait_for_http, wait_for_text

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
STOP_TIMEOUT_S = 30


def local_command(service: dict, **replace: str) -> list[str]:
    """The service's command with this venv's executables and the option values in ``replace``."""
    command = [str(BIN / part) if part in ("python", "diablo") else part for part in service["command"]]
    for option, value in replace.items():
        command[command.index(option) + 1] = value
    return command


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = local_command(compose_service("migrate"))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM the process (as ``docker stop`` does) and return its exit code."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    finally:
        kill_group(process)


def test_migrate_creates_the_registry_tables(env: dict[str, str], postgres_url: str) -> None:
    result = migrate(env)
    assert result.returncode == 0, result.stderr
    assert "Created an API key for project 'default'" in result.stdout  # --ensure-key, on the first start
    assert "is in" in migrate(env).stdout  # later starts say where the key is, not the key
    engine = create_engine(postgres_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"alembic_version", *Base.metadata.tables} <= tables


def test_api_serves_health_and_the_curl_example_then_stops_on_sigterm(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert migrate(env).returncode == 0
    port = free_port()
    command = local_command(compose_service("api"), **{"--host": "127.0.0.1", "--port": str(port)})
    api = start_logged(command, env, tmp_path / "api.log")
    try:
        base_url = f"http://127.0.0.1:{port}"
        assert wait_for_http(f"{base_url}/healthz", timeout_s=120).status_code == 200
        assert httpx.get(f"{base_url}/readyz", timeout=10).status_code == 200
        job = run_curl_example(base_url, tmp_path, env)
        assert job["training_file"].startswith("file-") and job["model"]
        assert job["status"] in ("validating_files", "queued")
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert stop(api) in (0, -signal.SIGTERM)
    finally:
        kill_group(api)
    log = (tmp_path / "api.log").read_text()
    assert "Application startup complete" in log and "Application shutdown complete" in log


def create_api_key(env: dict[str, str]) -> str:
    """What an operator runs in the api container (``diablo keys create``); the key is its last line."""
    command = [str(BIN / "diablo"), "keys", "create", "--project", "default"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.splitlines()[-1]


def run_curl_example(base_url: str, tmp_path: Path, env: dict[str, str]) -> dict:
    """Run the shell lines that ``diablo serve`` prints, on a small arithmetic file; return the job."""
    generator = ROOT / "examples" / "arithmetic" / "generate.py"
    out = tmp_path / "arithmetic"
    subprocess.run([sys.executable, generator, "--out", out, "--train", "20", "--test", "5"], check=True)
    api_key = create_api_key(env)
    lines = curl_example(base_url, "default", out / "train.jsonl", api_key)
    script = (
        "set -euo pipefail\n"
        + "\n".join(lines[:2])
        + f"\ncurl -sf -H 'Authorization: Bearer {api_key}' "
        + f"{base_url}/v1/fine_tuning/jobs/$JOB_ID"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_worker_answers_ping_then_stops_on_sigterm(env: dict[str, str], tmp_path: Path) -> None:
    env = env | {"DIABLO_WORKER_ALIVE_FILE": str(tmp_path / "alive")}
    assert migrate(env).returncode == 0
    name = f"diablo-test-{secrets.token_hex(4)}"
    replace = {"-Q": env["DIABLO_QUEUE_NAME"], "-n": f"{name}@%h"}
    worker = start_logged(local_command(compose_service("worker"), **replace), env, tmp_path / "worker.log")
    try:
        wait_for_text(tmp_path / "worker.log", " ready.", timeout_s=180)
        node = f"{name}@{socket.gethostname()}"
        ping = [str(BIN / "python"), "-m", "celery", "-A", "worker.celery_app:app", "inspect", "ping"]
        # Addressed to one node, ping returns once it answers: the timeout only bounds a hang.
        result = subprocess.run(
            [*ping, "-d", node, "--timeout", "60"], env=env, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0 and "pong" in result.stdout, result.stdout + result.stderr
        health = [str(BIN / "python"), *compose_service("worker")["healthcheck"]["test"][2:]]
        checked = subprocess.run(health, env=env, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stderr
        assert stop(worker) == 0
    finally:
        kill_group(worker)
    log = (tmp_path / "worker.log").read_text()
    assert env["DIABLO_QUEUE_NAME"] in log
