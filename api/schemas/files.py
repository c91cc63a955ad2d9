"""File objects: ``{"id": "file-…", "object": "file", "bytes", "created_at", "filename", "purpose", …}``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from api.schemas.lists import ListPublic
from api.schemas.rows import RowPublic


class FilePublic(RowPublic):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    expires_at: int | None = None


class FilesPublic(ListPublic[FilePublic]):
    pass


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
