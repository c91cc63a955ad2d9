"""The worker container's healthcheck: a file the worker touches, read by ``python -m worker.liveness``.

A solo-pool worker trains in its main thread, so ``celery inspect ping`` goes unanswered for a whole job and a
healthcheck built on it marks a busy worker unhealthy. Instead a daemon thread started when the worker is
ready touches ``settings.worker_alive_file`` every ``heartbeat_interval_s``, busy or idle, and the
healthcheck passes while the file is younger than ``heartbeat_timeout_s`` (the age after which a job's lease
counts as lost too). As with job leases (``worker.lease``), a process that lives but is wedged still ticks;
one that died stops at once. This module imports neither torch nor Celery: the check stays cheap.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

from registry.settings import Settings, get_settings

logger = logging.getLogger(__name__)


def touch(path: Path) -> None:
    """Mark the worker alive now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def start_ticking(path: Path, interval_s: float) -> threading.Event:
    """Touch ``path`` now and every ``interval_s`` from a daemon thread; set the returned event to stop."""
    stop = threading.Event()
    touch(path)  # at once: the healthcheck passes from the moment the worker is ready

    def tick() -> None:
        while True:
            try:
                touch(path)
            except OSError:
                logger.warning("could not touch %s; the healthcheck will fail if this goes on", path)
            if stop.wait(interval_s):
                return

    threading.Thread(target=tick, name="worker-liveness", daemon=True).start()
    return stop


def is_alive(path: Path, max_age_s: float, now: float | None = None) -> bool:
    """True when ``path`` was touched within ``max_age_s`` seconds."""
    try:
        modified = path.stat().st_mtime
    except OSError:
        return False
    return (time.time() if now is None else now) - modified <= max_age_s


def main(settings: Settings | None = None) -> int:
    """Exit status of the healthcheck: 0 when the worker ticked recently, else 1 with the reason."""
    settings = settings or get_settings()
    if is_alive(settings.worker_alive_file, settings.heartbeat_timeout_s):
        return 0
    print(f"worker not alive: {settings.worker_alive_file} is missing or older than "
          f"{settings.heartbeat_timeout_s:g} s", file=sys.stderr)  # fmt: skip
    return 1


if __name__ == "__main__":
    sys.exit(main())
