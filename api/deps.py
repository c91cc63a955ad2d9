"""Request dependencies: settings, database sessions and the caller's project, as ``Annotated`` aliases.

FastAPI runs a sync dependency on the thread pool, one hand-off per dependency. These are async and do no
I/O of their own in the common case, so a request crosses to a thread only for its handler's database work
(and to end a transaction the handler left open): settings are a lookup, a session connects lazily, and a
key verified in the last ``VERIFIED_KEY_TTL_S`` seconds is not looked up again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.errors import AUTHENTICATION_ERROR, APIError
from registry.api_keys import SECRET_PREFIX, masked_key, verified_keys, verify_api_key
from registry.db import get_sessionmaker, session_scope
from registry.models import DEFAULT_PROJECT
from registry.settings import Settings

MAX_PAGE_SIZE = 100


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_session(settings: SettingsDep) -> AsyncIterator[Session]:
    """A session for one request; handlers commit what they change, the rest is rolled back."""
    session = get_sessionmaker(settings.database_url)()  # connects on its first query, in the handler
    try:
        yield session
    finally:
        if session.in_transaction():  # the rollback talks to the database: not on the event loop
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]

# auto_error=False: a missing header is answered by get_current_project, in the OpenAI error envelope.
bearer_scheme = HTTPBearer(auto_error=False, description="An API key: `diablo keys create --project NAME`")
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def _verify_and_remember(database_url: str, secret: str) -> str | None:
    with session_scope(database_url) as session:  # commits the key's last_used_at
        project = verify_api_key(session, secret)
    if project is not None:
        verified_keys.remember(database_url, secret, project)
    return project


async def get_current_project(settings: SettingsDep, credentials: BearerCredentials = None) -> str:
    """The project of the request's API key; every request is the ``"default"`` project when auth is off.

    A key is looked up at most once per ``VERIFIED_KEY_TTL_S`` seconds (``registry.api_keys.VerifiedKeys``),
    so a key revoked by another process is refused within that time.

    Raises:
        APIError: 401 ``missing_api_key`` without a bearer key, ``invalid_api_key`` for an unknown or
            revoked one.
    """
    if settings.auth == "off":
        return DEFAULT_PROJECT
    if credentials is None or not credentials.credentials:
        message = (
            "Missing bearer authentication in header: send 'Authorization: Bearer <API key>' "
            f"(create a key with `diablo keys create --project NAME`; keys start with {SECRET_PREFIX!r})"
        )
        raise APIError(401, message, AUTHENTICATION_ERROR, "missing_api_key")
    secret, url = credentials.credentials, settings.database_url
    project = verified_keys.project(url, secret) or await run_in_threadpool(_verify_and_remember, url, secret)
    if project is None:
        message = f"Incorrect API key provided: {masked_key(secret)}"
        raise APIError(401, message, AUTHENTICATION_ERROR, "invalid_api_key")
    return project


CurrentProject = Annotated[str, Depends(get_current_project)]
AfterQuery = Annotated[str | None, Query(description="Return objects older than this id")]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="The most objects to return")]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=256,
        description="A retry with the same key and body returns the first answer's object",
    ),
]
