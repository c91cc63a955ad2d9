"""``Idempotency-Key`` on creating POSTs: a retried request gets the object the first one created.

The key is stored in the same transaction as the object it created, so of two concurrent requests with one
key exactly one commits; the other finds the key and answers with the winner's object. The same key with a
different body (or on another route) is a 409.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.orm import Session

from api.errors import APIError
from registry.models import IdempotencyKey

HEADER = "Idempotency-Key"


def request_hash(body: Any) -> str:
    """A stable digest of a JSON-ready request body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def find_replay(session: Session, project: str, key: str, route: str, digest: str) -> str | None:
    """The id of the object created earlier under ``key``, or None if the key is new.

    Raises:
        APIError: 409 ``idempotency_key_reused`` if the key was used for another request.
    """
    row = session.get(IdempotencyKey, (project, key))
    if row is None:
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
