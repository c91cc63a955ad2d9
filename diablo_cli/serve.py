"""``diablo serve``: migrate, make sure a development API key exists, prepare the default model, run the API
and the workers until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Annotated

import httpx
import typer
from rich.console import Console

from diablo_cli.banner import display_host, mask_password, print_banner
from diablo_cli.dev_key import dev_key_for_banner
from diablo_cli.supervisor import Child, first_exited, start_child, stop_children, wait_for_stop
from registry.db import upgrade_database
from registry.settings import Settings, get_settings

HEALTH_TIMEOUT_S = 120.0
# Runs in a subprocess so that torch is loaded (and its memory released) only for the check.
MODEL_CHECK = """
import sys
from diablo_core.models.catalog import DEFAULT_MODEL_ID, canonical_model_id
from diablo_core.models.loading import ensure_default_checkpoint
if canonical_model_id(sys.argv[2]) == DEFAULT_MODEL_ID:
    print(ensure_default_checkpoint(sys.argv[1]))
"""

# Output that is not a terminal (a log file) gets long lines: 80 columns would fold paths and URLs.
LOG_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() else LOG_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else LOG_WIDTH)


# httptools and uvloop: uvicorn's C HTTP parser and event loop. uvicorn's access log is off: the API
# writes its own (api.middleware); uvicorn's would be discarded after costing a log record per request.
API_SERVER_OPTIONS = ("--http", "httptools", "--loop", "uvloop", "--no-access-log")


def api_command(host: str, port: int) -> list[str]:
    """The API process: uvicorn serving ``api.main:app``."""
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", host, "--port", str(port)]
    return [*command, *API_SERVER_OPTIONS]


def worker_command(queue: str, name: str) -> list[str]:
    """One Celery worker that runs one job at a time from ``queue``."""
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app:app", "worker",
        "--pool", "solo", "--concurrency", "1", "-Q", queue, "--loglevel", "INFO", "-n", name,
    ]  # fmt: skip


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of every child: this one, plus the settings ``serve`` resolved or overrode."""
    passed = settings.as_environment("data_dir", "database_url", "broker_url", "queue_name", "host", "port")
    return {**os.environ, **passed}


def ensure_model(settings: Settings) -> None:
    """Convert the default model once, before any worker needs it; exit 1 when that fails."""
    with console.status(f"Checking model {settings.default_model!r} (the first run converts it)"):
        result = subprocess.run(
            [sys.executable, "-c", MODEL_CHECK, str(settings.data_dir), settings.default_model],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        err_console.print(result.stderr, markup=False, highlight=False)
        err_console.print(f"Could not prepare model {settings.default_model!r} (see above).")
        raise typer.Exit(1)
    if result.stdout.strip():
        console.print(f"Default model ready at {result.stdout.strip()}", highlight=False)


def start_services(settings: Settings, workers: int) -> list[Child]:
    """Start the API and ``workers`` Celery workers, each in its own process group."""
    env = child_env(settings)
    children = [start_child("api", api_command(settings.host, settings.port), env)]
    for index in range(1, workers + 1):
        name = f"worker{index}"
        children.append(start_child(name, worker_command(settings.queue_name, f"{name}@%h"), env))
    return children


def wait_healthy(base_url: str, children: Sequence[Child], stop: threading.Event) -> Child | None:
    """Poll ``/healthz`` until it answers 200; return a child that exited meanwhile, if one did."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while not stop.is_set():
        exited = first_exited(children)
        if exited is not None:
            return exited
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2.0).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API did not answer {base_url}/healthz within {HEALTH_TIMEOUT_S:.0f} s")
        stop.wait(0.3)
    return None


def install_signal_handlers() -> tuple[threading.Event, threading.Event]:
    """SIGINT and SIGTERM set ``stop``; a second one sets ``force`` (kill without waiting)."""
    stop, force = threading.Event(), threading.Event()

    def handle(_signum: int, _frame: object) -> None:
        (force if stop.is_set() else stop).set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop, force


def supervise(
    children: list[Child],
    settings: Settings,
    grace_s: float,
    stop: threading.Event,
    force: threading.Event,
    api_key: str | None = None,
    key_shown: bool = True,
) -> int:
    """Run until ``stop`` is set or a child dies, then stop every child; return the exit code.

    The banner shows ``api_key`` in full only when ``key_shown`` (the start that created it).
    """
    base_url = f"http://{display_host(settings.host)}:{settings.port}"
    exited: Child | None = None
    try:
        exited = wait_healthy(base_url, children, stop)
        if exited is None and not stop.is_set():
            print_banner(console, settings, base_url, len(children) - 1, api_key, key_shown)
            exited = wait_for_stop(children, stop)
    except TimeoutError as error:
        err_console.print(f"{error}; stopping.")
        return 1
    finally:
        if exited is not None:
            err_console.print(
                f"{exited.name} (pid {exited.pid}) exited unexpectedly with code "
                f"{exited.process.returncode}; stopping the others."
            )
        console.print("Stopping the API and the workers (Ctrl-C again kills them at once).")
        killed = stop_children(children, grace_s, force)
        if killed:
            err_console.print("Killed after the grace period: " + ", ".join(child.name for child in killed))
    return 0 if exited is None else 1


def serve(
    host: Annotated[str | None, typer.Option(help="Interface the API binds (default: DIABLO_HOST).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="API port (default: DIABLO_PORT).")
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="Celery worker processes to start.")] = 1,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Start the API only.")] = False,
    grace: Annotated[float, typer.Option(min=0, help="Seconds children get to stop on Ctrl-C.")] = 30.0,
) -> None:
    """Run the API and the workers with the DIABLO_* settings until Ctrl-C."""
    settings = get_settings()
    overrides = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    settings = settings.model_copy(update=overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"Migrating {mask_password(settings.database_url)}", highlight=False)
    upgrade_database(settings.database_url)
    api_key, key_shown = dev_key_for_banner(settings)
    if not no_worker and workers > 0:
        ensure_model(settings)
    stop, force = install_signal_handlers()
    children = start_services(settings, 0 if no_worker else workers)
    raise typer.Exit(supervise(children, settings, grace, stop, force, api_key, key_shown))
