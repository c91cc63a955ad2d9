"""``Idempotency-Key`` on POST routes: a retried request gets the object the first one created or changed.

A key belongs to a project. It is stored in the same transaction as the object its request created, so of
two concurrent requests with one key exactly one commits; the other finds the key and answers with the
winner's object. The same key with a different body (or on another route) is a 409. A key older than its
time to live (``idempotency_ttl_s``) is forgotten: its row is purged and the request counts as new.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import APIError
from registry.models import IdempotencyKey, now_unix

HEADER = "Idempotency-Key"
DEFAULT_TTL_S = 86_400


def request_hash(body: Any) -> str:
    """A stable digest of a JSON-ready request body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class IdempotentRequest:
    """One POST under an idempotency key: whose it is, the key, the route, and the digest of its body."""

    project: str
    key: str
    route: str
    digest: str
    ttl_s: int = DEFAULT_TTL_S

    @classmethod
    def of(
        cls, project: str, key: str | None, route: str, body: Any, ttl_s: int = DEFAULT_TTL_S
    ) -> IdempotentRequest | None:
        """The request under ``key`` (remembered ``ttl_s`` seconds), or None when the client sent no key."""
        return cls(project, key, route, request_hash(body), ttl_s) if key else None


def purge_expired(session: Session, project: str, key: str, ttl_s: int) -> None:
    """Delete ``key`` if it is older than ``ttl_s`` seconds, committed at once.

    Its own short commit: the caller has written nothing yet, and on SQLite a write held open would make
    every other writer wait for the rest of the request (an upload's validation).
    """
    cutoff = now_unix() - ttl_s
    statement = delete(IdempotencyKey).where(
        IdempotencyKey.project_id == project, IdempotencyKey.key == key, IdempotencyKey.created_at < cutoff
    )
    session.execute(statement, execution_options={"synchronize_session": False})
    session.commit()


def find_replay(
    session: Session, project: str, key: str, route: str, digest: str, ttl_s: int = DEFAULT_TTL_S
) -> str | None:
    """The id of the object created earlier under ``key``, or None if the key is new or expired.

    Raises:
        APIError: 409 ``idempotency_key_reused`` if the key was used for another request.
    """
    row = session.get(IdempotencyKey, (project, key), populate_existing=True)
    if row is None:
        return None
    if row.created_at < now_unix() - ttl_s:
        # Purged here or by a concurrent request: either way the key is new, and if that request commits
        # its own row first, this request's commit_once finds it.
        session.expunge(row)
        purge_expired(session, project, key, ttl_s)
        return None
    if row.route != route or row.request_hash != digest:
        message = f"{HEADER} {key!r} was already used with a different request"
        raise APIError(409, message, code="idempotency_key_reused", param=HEADER)
    return (row.response or {}).get("id")


def remember(session: Session, project: str, key: str, route: str, digest: str, object_id: str) -> None:
    """Record ``key`` as having created ``object_id`` (committed with the caller's transaction)."""
    row = IdempotencyKey(project_id=project, key=key, route=route, request_hash=digest)
    row.response = {"id": object_id}
    session.add(row)


def replayed_id(session: Session, request: IdempotentRequest | None) -> str | None:
    """The id answered earlier for ``request``, or None (also when there is no key); 409 on reuse."""
    if request is None:
        return None
    return find_replay(session, request.project, request.key, request.route, request.digest, request.ttl_s)


def commit_once(session: Session, request: IdempotentRequest | None, object_id: str) -> str | None:
    """Commit the caller's changes together with ``request``'s key.

    Returns:
        None when this request committed; the winner's object id when a concurrent request with the same
        key committed first (this request's changes are then rolled back).

    Raises:
        APIError: 409 when the winner's request had another body.
        IntegrityError: When the commit failed for a reason other than the key.
    """
    if request is not None:
        remember(session, request.project, request.key, request.route, request.digest, object_id)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        earlier = replayed_id(session, request)
        if earlier is None:
            raise
        return earlier
    return None
