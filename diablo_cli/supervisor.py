"""Child processes of ``diablo serve``: started in their own process groups, watched, stopped together.

Each child gets its own process group so that a terminal's Ctrl-C reaches only ``diablo serve``, which then
stops the children in order: SIGTERM first (uvicorn drains, Celery does a warm shutdown), SIGKILL for what
is left after the grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

POLL_INTERVAL_S = 0.2


@dataclass
class Child:
    """A named child process that leads its own process group."""

    name: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's whole process group, ignoring a group that is already gone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)


def start_child(name: str, command: Sequence[str], env: Mapping[str, str]) -> Child:
    """Start ``command`` as the leader of a new process group; stdout and stderr are inherited."""
    process = subprocess.Popen(list(command), env=dict(env), process_group=0)
    return Child(name=name, process=process)


def first_exited(children: Sequence[Child]) -> Child | None:
    """Return a child that has exited, or None while all run."""
    return next((child for child in children if not child.alive()), None)


def wait_for_stop(children: Sequence[Child], stop: threading.Event) -> Child | None:
    """Block until ``stop`` is set (returns None) or a child exits (returns that child)."""
    while not stop.wait(POLL_INTERVAL_S):
        exited = first_exited(children)
        if exited is not None:
            return exited
    return None


def stop_children(
    children: Sequence[Child], grace_s: float, force: threading.Event | None = None
) -> list[Child]:
    """SIGTERM every child's group, wait up to ``grace_s``, then SIGKILL the groups still running.

    Args:
        children: The children to stop (already exited ones are skipped).
        grace_s: Seconds the children get to exit on their own.
        force: When set during the wait (a second Ctrl-C), the remaining children are killed at once.

    Returns:
        The children that had to be killed.
    """
    for child in children:
        if child.alive():
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(child.alive() for child in children) and time.monotonic() < deadline:
        if force is not None and force.is_set():
            break
        time.sleep(POLL_INTERVAL_S)
    killed = [child for child in children if child.alive()]
    for child in killed:
        child.signal_group(signal.SIGKILL)
    for child in children:
        child.process.wait()
    return killed
