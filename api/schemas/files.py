"""File objects: ``{"id": "file-…", "object": "file", "bytes", "created_at", "filename", "purpose", …}``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from api.schemas.lists import ListPublic
from registry.models import File


class FilePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # built from a registry row

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
        return cls.model_validate(row)


class FilesPublic(ListPublic[FilePublic]):
    pass


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
