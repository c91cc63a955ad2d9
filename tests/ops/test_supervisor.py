"""diablo serve's child processes: own process groups, stopped by SIGTERM, killed after the grace period."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diablo_cli.supervisor import Child, start_child, stop_children, wait_for_stop
from tests.process_helpers import is_running, wait_for_file


def python_child(name: str, code: str) -> Child:
    return start_child(name, [sys.executable, "-c", code], os.environ)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.alive():
            child.signal_group(signal.SIGKILL)
            child.process.wait()


def test_child_leads_its_own_process_group(children: list[Child]) -> None:
    children.append(python_child("sleeper", "import time; time.sleep(60)"))
    assert os.getpgid(children[0].pid) == children[0].pid != os.getpgid(0)


def test_sigterm_stops_children_that_honour_it(children: list[Child]) -> None:
    children.extend(python_child(f"sleeper{i}", "import time; time.sleep(60)") for i in range(2))
    assert stop_children(children, grace_s=10) == []
    assert [child.process.returncode for child in children] == [-signal.SIGTERM] * 2


def test_children_ignoring_sigterm_are_killed_after_the_grace_period(
    children: list[Child], tmp_path: Path
) -> None:
    marker = tmp_path / "ignoring"
    code = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
    )
    stubborn = start_child("stubborn", [sys.executable, "-c", code, str(marker)], os.environ)
    polite = python_child("polite", "import time; time.sleep(60)")
    children.extend([stubborn, polite])
    wait_for_file(marker)
    started = time.monotonic()
    assert stop_children(children, grace_s=1.0) == [stubborn]
    assert time.monotonic() - started >= 1.0
    assert stubborn.process.returncode == -signal.SIGKILL
    assert polite.process.returncode == -signal.SIGTERM


def test_force_skips_the_rest_of_the_grace_period(children: list[Child], tmp_path: Path) -> None:
    marker = tmp_path / "ignoring"
    code = (
        "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "pathlib.Path(sys.argv[1]).touch(); time.sleep(60)"
    )
    children.append(start_child("stubborn", [sys.executable, "-c", code, str(marker)], os.environ))
    wait_for_file(marker)
    force = threading.Event()
    threading.Timer(0.5, force.set).start()
    started = time.monotonic()
    assert stop_children(children, grace_s=60, force=force) == children
    assert time.monotonic() - started < 30


def test_stopping_a_group_stops_the_grandchildren(children: list[Child], tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    children.append(start_child("shell", ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], os.environ))
    grandchild = int(wait_for_file(pid_file, nonempty=True).read_text())
    assert is_running(grandchild)
    stop_children(children, grace_s=10)
    deadline = time.monotonic() + 10
    while is_running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_running(grandchild)


def test_wait_for_stop_returns_the_child_that_exited(children: list[Child]) -> None:
    children.append(python_child("sleeper", "import time; time.sleep(60)"))
    children.append(python_child("quitter", "raise SystemExit(3)"))
    exited = wait_for_stop(children, threading.Event())
    assert exited is not None and exited.name == "quitter" and exited.process.returncode == 3


def test_wait_for_stop_returns_none_when_asked_to_stop(children: list[Child]) -> None:
    children.append(python_child("sleeper", "import time; time.sleep(60)"))
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    assert wait_for_stop(children, stop) is None
    assert children[0].alive()
