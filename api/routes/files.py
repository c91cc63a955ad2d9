"""``/v1/files``: upload, list, retrieve, download and delete fine-tuning files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi import File as FileParam
from fastapi.responses import FileResponse

from api.deps import AfterQuery, CurrentProject, IdempotencyKeyHeader, SessionDep, SettingsDep
from api.errors import not_found
from api.schemas.files import FileDeleted, FilePublic, FilesPublic
from api.services import files as service

router = APIRouter(prefix="/v1/files", tags=["files"])
MAX_FILES_PAGE = 10_000


@router.post("", response_model=FilePublic)
def upload_file(
    session: SessionDep,
    settings: SettingsDep,
    project: CurrentProject,
    file: Annotated[UploadFile, FileParam(description="A JSONL file of training examples")],
    purpose: Annotated[str, Form(description='Must be "fine-tune"')],
    idempotency_key: IdempotencyKeyHeader = None,
) -> FilePublic:
    """Upload and validate a JSONL fine-tuning file."""
    row = service.store_upload(session, settings, project, file.file, file.filename, purpose, idempotency_key)
    return FilePublic.from_row(row)


@router.get("", response_model=FilesPublic)
def list_files(
    session: SessionDep,
    project: CurrentProject,
    after: AfterQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_FILES_PAGE)] = MAX_FILES_PAGE,
    purpose: str | None = None,
) -> FilesPublic:
    """List the project's files, newest first."""
    page = service.list_files(session, project, purpose=purpose, after=after, limit=limit)
    return FilesPublic.of([FilePublic.from_row(row) for row in page.data], page.has_more)


@router.get("/{file_id}", response_model=FilePublic)
def retrieve_file(session: SessionDep, project: CurrentProject, file_id: str) -> FilePublic:
    """Retrieve a file object."""
    return FilePublic.from_row(service.get_file(session, project, file_id))


@router.get("/{file_id}/content", response_class=FileResponse)
def download_file(session: SessionDep, project: CurrentProject, file_id: str) -> FileResponse:
    """Download a file's bytes as uploaded."""
    row = service.get_file(session, project, file_id)
    if not Path(row.storage_path).is_file():
        raise not_found("file content", file_id)
    return FileResponse(row.storage_path, media_type="application/octet-stream", filename=row.filename)


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(session: SessionDep, project: CurrentProject, file_id: str) -> FileDeleted:
    """Delete a file and its stored bytes."""
    service.delete_file(session, project, file_id)
    return FileDeleted(id=file_id)
