"""Connection settings and failures: env vars, the bearer key, an unreachable API (the real script)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from diablo_cli.client import APIConnectionError, APIRequestError, DiabloClient, normalize_base_url
from tests.cli.conftest import Server, diablo, free_port

pytestmark = pytest.mark.integration
DIABLO = Path(sys.executable).with_name("diablo")


def run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the installed ``diablo`` script with ``env`` added to a clean DIABLO_* environment."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("DIABLO_")}
    return subprocess.run(
        [str(DIABLO), *args], env=base | env, capture_output=True, text=True, timeout=60, check=False
    )


def test_unreachable_api_exits_3_with_a_hint() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_script("files", "list", "--base-url", url, env={})
    assert result.returncode == 3, result.stderr
    assert f"cannot reach the API at {url}: is `make run` running?" in result.stderr
    assert result.stdout == ""


def test_env_vars_give_the_url_and_the_bearer_key(server: Server, training_path: Path) -> None:
    env = {"DIABLO_BASE_URL": f"{server.url}/v1", "DIABLO_API_KEY": "sk-cli-test"}
    result = run_script("files", "upload", str(training_path), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("file-") and result.stdout.count("\n") == 1
    assert server.authorizations == ["Bearer sk-cli-test"]


def test_options_override_env_vars(server: Server) -> None:
    env = {"DIABLO_BASE_URL": f"http://127.0.0.1:{free_port()}", "DIABLO_API_KEY": "sk-env"}
    result = diablo(server, "files", "list", "--api-key", "sk-option", env=env)
    assert result.exit_code == 0, result.output
    assert server.authorizations == ["Bearer sk-option"]
    no_key = diablo(server, "files", "list", env={"DIABLO_API_KEY": None})
    assert no_key.exit_code == 0 and server.authorizations[-1] is None


def test_client_errors_are_typed(server: Server) -> None:
    with DiabloClient(server.url) as client, pytest.raises(APIRequestError) as missing:
        client.get_job("ftjob-nope")
    assert (missing.value.status, missing.value.code, missing.value.problems) == (404, "not_found", [])
    assert "ftjob-nope" in missing.value.message
    with DiabloClient(f"http://127.0.0.1:{free_port()}") as client, pytest.raises(APIConnectionError):
        client.list_models()


def test_errors_without_an_envelope_are_described() -> None:
    response = httpx.Response(502, text="<html>Bad gateway</html>", request=httpx.Request("GET", "http://x"))
    error = APIRequestError.from_response(response)
    assert (error.status, error.code, error.message) == (502, None, "HTTP 502: <html>Bad gateway</html>")


def test_base_url_normalization() -> None:
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000"
    assert normalize_base_url("http://h:8000/") == "http://h:8000"
    assert normalize_base_url("http://h:8000/api/v1") == "http://h:8000/api"
