"""Request dependencies: settings, database sessions and the caller's project, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from registry.db import get_sessionmaker
from registry.models import DEFAULT_PROJECT
from registry.settings import Settings

MAX_PAGE_SIZE = 100


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """A session for one request; handlers commit what they change, the rest is rolled back."""
    with get_sessionmaker(settings.database_url)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


BearerHeader = Annotated[str | None, Header(description="Bearer <API key>; accepted, not checked yet")]


def get_current_project(authorization: BearerHeader = None) -> str:
    """The caller's project: ``"default"`` until authentication exists (any bearer key is accepted)."""
    del authorization
    return DEFAULT_PROJECT


CurrentProject = Annotated[str, Depends(get_current_project)]
AfterQuery = Annotated[str | None, Query(description="Return objects older than this id")]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="The most objects to return")]
