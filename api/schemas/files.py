"""File objects: ``{"id": "file-…", "object": "file", "bytes", "created_at", "filename", "purpose", …}``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from api.schemas.lists import ListPublic
from registry.models import File


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    expires_at: int | None = None

    @classmethod
    def from_row(cls, row: File) -> FilePublic:
        return cls(
            id=row.id,
            bytes=row.bytes,
            created_at=row.created_at,
            filename=row.filename,
            purpose=row.purpose,
            status=row.status,
            status_details=row.status_details,
        )


class FilesPublic(ListPublic[FilePublic]):
    pass


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
