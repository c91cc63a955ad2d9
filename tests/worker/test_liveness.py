"""The worker healthcheck: a file ticked from a thread while the solo pool is busy, checked by its age."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from registry.settings import Settings
from worker.liveness import is_alive, main, start_ticking


def _settings(tmp_path: Path, alive: Path) -> Settings:
    return Settings(
        data_dir=tmp_path, worker_alive_file=alive, heartbeat_interval_s=0.05, heartbeat_timeout_s=1
    )


def test_the_file_ticks_while_the_main_thread_is_busy(tmp_path: Path) -> None:
    alive = tmp_path / "run" / "alive"
    stop = start_ticking(alive, 0.05)
    try:
        os.utime(alive, (0, 0))  # an old tick: the thread must renew it while this thread is busy
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            sum(range(10_000))  # busy, as training would be
        assert is_alive(alive, 1.0)
        assert main(_settings(tmp_path, alive)) == 0
    finally:
        stop.set()


def test_a_stale_or_missing_file_fails_the_check(tmp_path: Path, capsys) -> None:
    alive = tmp_path / "alive"
    assert main(_settings(tmp_path, alive)) == 1
    alive.touch()
    os.utime(alive, (time.time() - 5, time.time() - 5))
    assert not is_alive(alive, 1.0) and main(_settings(tmp_path, alive)) == 1
    assert "older than 1 s" in capsys.readouterr().err


def test_the_healthcheck_command_loads_no_torch(tmp_path: Path) -> None:
    alive = tmp_path / "alive"
    alive.touch()
    code = "import runpy, sys; runpy.run_module('worker.liveness', run_name='__main__')"
    env = os.environ | {"DIABLO_WORKER_ALIVE_FILE": str(alive), "DIABLO_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    probe = "import sys, worker.liveness; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], env=env, timeout=60).returncode == 0
