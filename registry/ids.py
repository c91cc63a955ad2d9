"""Identifiers that sort by creation time.

An id is ``<prefix><14 hex digits of microseconds since the epoch><10 random hex digits>``. Because the time
part has a fixed width and comes first, comparing two ids of the same prefix as strings compares their
creation times, so "newest first" is ``ORDER BY id DESC`` and ``after=<id>`` pagination is
``WHERE id < :after``.
"""

from __future__ import annotations

import secrets
import threading
import time

FILE_PREFIX = "file-"
JOB_PREFIX = "ftjob-"
EVENT_PREFIX = "ftevent-"
CHECKPOINT_PREFIX = "ftckpt-"
API_KEY_PREFIX = "key-"

_TIME_DIGITS = 14
_RANDOM_BYTES = 5

_lock = threading.Lock()
_last_micros = 0


def _next_micros() -> int:
    """Return the current time in microseconds, strictly increasing within this process."""
    global _last_micros
    with _lock:
        now = time.time_ns() // 1000
        _last_micros = max(now, _last_micros + 1)
        return _last_micros


def new_id(prefix: str) -> str:
    """Return a new unique id that starts with ``prefix`` and sorts after every id made before it here.

    Args:
        prefix: The object kind, e.g. ``"ftjob-"``.

    Returns:
        ``prefix`` followed by 24 lowercase hex digits.
    """
    return f"{prefix}{_next_micros():0{_TIME_DIGITS}x}{secrets.token_hex(_RANDOM_BYTES)}"


def id_part(object_id: str) -> str:
    """Return the part of an id after its prefix (``"ftjob-abc"`` -> ``"abc"``)."""
    return object_id.rsplit("-", 1)[-1]
