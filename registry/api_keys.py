"""API keys: created for a project, checked on every request, revoked by id or prefix.

A key's secret is ``sk-diablo-<43 URL-safe characters>`` (32 random bytes). Only its sha256 is stored: the
secret has 256 bits of entropy, so a fast hash is enough and one indexed lookup finds the key. The first
characters (``prefix``) are kept in clear so that people can tell their keys apart.

``VerifiedKeys`` remembers the keys a process verified recently, so that the API does not look a key up on
every request: a key revoked in the same process is refused at once, one revoked by another process (``diablo
keys revoke``) within ``VERIFIED_KEY_TTL_S``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from registry.models import ApiKey, now_unix

SECRET_PREFIX = "sk-diablo-"
SECRET_BYTES = 32
# The fixed part plus 8 random characters: enough to tell keys apart, far too little to guess the rest.
SHOWN_CHARS = len(SECRET_PREFIX) + 8
# Recording every use would turn each read request into a write; once a minute per key is enough.
TOUCH_INTERVAL_S = 60
PROJECT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# How long a verified key is trusted without a lookup: the delay before another process's revocation applies.
VERIFIED_KEY_TTL_S = 10.0
VERIFIED_KEYS_MAX = 10_000


class AmbiguousKeyError(ValueError):
    """A prefix matches more than one key."""


def masked_key(secret: str) -> str:
    """``sk-diablo-AbCd…wxyz`` -> ``sk-diab***wxyz``: enough to recognise a key, too little to use it."""
    return f"{secret[:7]}***{secret[-4:]}" if len(secret) > 12 else "***"


def hash_secret(secret: str) -> str:
    """The stored form of a secret: its sha256 as hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def check_project_name(project: str) -> str:
    """``project`` if it is a valid project name (letters, digits, ``._-``, at most 64 characters).

    Raises:
        ValueError: Naming the value when it is not.
    """
    if not PROJECT_PATTERN.fullmatch(project):
        raise ValueError(
            f"project must be 1-64 letters, digits, '.', '_' or '-' and start with a letter or digit, "
            f"got {project!r}"
        )
    return project


def create_api_key(session: Session, project: str, name: str | None = None) -> tuple[ApiKey, str]:
    """Create a key for ``project`` (flushed, not committed).

    Returns:
        The stored record and the secret, which is shown once and cannot be recovered later.
    """
    secret = SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    record = ApiKey(
        project_id=check_project_name(project),
        name=name,
        prefix=secret[:SHOWN_CHARS],
        key_hash=hash_secret(secret),
    )
    session.add(record)
    session.flush()
    return record, secret


def verify_api_key(session: Session, secret: str, *, now: int | None = None) -> str | None:
    """The project of the key ``secret``, or None if no active key has that secret.

    The key's ``last_used_at`` is updated (flushed) at most once per ``TOUCH_INTERVAL_S``.
    """
    digest = hash_secret(secret)
    record = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if record is None or record.revoked_at is not None or not hmac.compare_digest(record.key_hash, digest):
        return None
    now = now_unix() if now is None else now
    if record.last_used_at is None or now - record.last_used_at >= TOUCH_INTERVAL_S:
        record.last_used_at = now
        session.flush()
    return record.project_id


class VerifiedKeys:
    """Keys verified in the last ``ttl_s`` seconds, by database and key hash, with their project.

    Holds hashes, never secrets; thread-safe. ``revoke_api_key`` clears the process's instance.
    """

    def __init__(
        self,
        ttl_s: float = VERIFIED_KEY_TTL_S,
        max_size: int = VERIFIED_KEYS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_size, self.clock = ttl_s, max_size, clock
        self._entries: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def project(self, database_url: str, secret: str) -> str | None:
        """The project of ``secret`` if it was verified against ``database_url`` less than ``ttl_s`` ago."""
        entry = self._entries.get((database_url, hash_secret(secret)))
        if entry is None or entry[1] <= self.clock():
            return None
        return entry[0]

    def remember(self, database_url: str, secret: str, project: str) -> None:
        """Trust ``secret`` as a key of ``project`` for the next ``ttl_s`` seconds."""
        with self._lock:
            if len(self._entries) >= self.max_size:
                self._entries.clear()  # only under a flood of distinct keys; each is looked up again
            self._entries[(database_url, hash_secret(secret))] = (project, self.clock() + self.ttl_s)

    def clear(self) -> None:
        """Forget every key: each is looked up again on its next use."""
        with self._lock:
            self._entries.clear()


verified_keys = VerifiedKeys()


def revoke_api_key(session: Session, key: str) -> bool:
    """Revoke the active key whose id, shown prefix or secret is ``key`` (flushed); False if none matches.

    Raises:
        AmbiguousKeyError: If ``key`` is a prefix shared by several active keys.
    """
    matches = list(
        session.scalars(
            select(ApiKey).where(
                ApiKey.revoked_at.is_(None),
                or_(ApiKey.id == key, ApiKey.prefix == key, ApiKey.key_hash == hash_secret(key)),
            )
        )
    )
    if len(matches) > 1:
        ids = ", ".join(match.id for match in matches)
        raise AmbiguousKeyError(f"{key!r} matches several keys ({ids}); revoke one by its id")
    if not matches:
        return False
    matches[0].revoked_at = now_unix()
    session.flush()
    verified_keys.clear()
    return True


def list_api_keys(
    session: Session, project: str | None = None, *, include_revoked: bool = False
) -> list[ApiKey]:
    """Keys newest first, optionally of one project; revoked ones only with ``include_revoked``."""
    statement = select(ApiKey).order_by(ApiKey.id.desc())
    if project is not None:
        statement = statement.where(ApiKey.project_id == project)
    if not include_revoked:
        statement = statement.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(statement))


def has_active_key(session: Session, project: str) -> bool:
    """Whether ``project`` has at least one key that is not revoked."""
    statement = select(ApiKey.id).where(ApiKey.project_id == project, ApiKey.revoked_at.is_(None))
    return session.scalar(statement.limit(1)) is not None
