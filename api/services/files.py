"""Uploaded files: streamed to disk, validated as fine-tuning data, renamed into place, recorded.

A file is stored as ``<files_dir>/<file id>.jsonl``; the user's filename is kept only as a label (basename,
odd characters replaced) and never used as a path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError, not_found
from api.services.file_use import ensure_file_unused
from api.services.idempotency import IdempotentRequest, commit_once, replayed_id
from api.services.quota import check_storage_quota, reserve_storage
from diablo_core.data.datasets import DatasetLimits, DatasetReport, validate_dataset
from registry.ids import FILE_PREFIX, new_id
from registry.models import File
from registry.pagination import Page, paginate
from registry.settings import Settings
from registry.storage import replace_durably, uploaded_file_path

FINE_TUNE = "fine-tune"
UPLOAD_ROUTE = "POST /v1/files"
CHUNK_SIZE = 1 << 20
SHOWN_PROBLEMS = 5
MAX_FILENAME = 255
_FILENAME_FORBIDDEN = re.compile(r"[^A-Za-z0-9._ -]+")


def sanitize_filename(name: str | None) -> str:
    """The basename of ``name`` with characters other than letters, digits, ``._ -`` replaced by ``_``."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _FILENAME_FORBIDDEN.sub("_", base).strip(" .")
    return cleaned[:MAX_FILENAME] or "upload.jsonl"


def file_too_large(settings: Settings) -> APIError:
    """The 413 answered for uploads over ``settings.max_upload_bytes``."""
    message = f"File is too large: the limit is {settings.max_upload_bytes} bytes"
    return APIError(413, message, code="file_too_large", param="file")


def _copy_limited(source: BinaryIO, target: BinaryIO, limit: int, settings: Settings) -> tuple[int, str]:
    """Copy ``source`` to ``target`` chunk by chunk; returns (bytes, sha256 hex); 413 past ``limit``."""
    size, digest = 0, hashlib.sha256()
    while chunk := source.read(CHUNK_SIZE):
        size += len(chunk)
        if size > limit:
            raise file_too_large(settings)
        digest.update(chunk)
        target.write(chunk)
    return size, digest.hexdigest()


def invalid_file(report: DatasetReport) -> APIError:
    """The 400 listing a dataset's first problems (at most 100) and counting all under ``num_problems``."""
    shown = "; ".join(problem.message for problem in report.problems[:SHOWN_PROBLEMS])
    more = report.num_problems - min(SHOWN_PROBLEMS, len(report.problems))
    suffix = f" (and {more} more)" if more > 0 else ""
    problems = [{"line": p.line, "code": p.code, "message": p.message} for p in report.problems]
    message = f"Invalid fine-tuning file: {shown}{suffix}"
    extra = {"problems": problems, "num_problems": report.num_problems}
    return APIError(400, message, code="invalid_file", param="file", extra=extra)


def check_purpose(purpose: str) -> None:
    """400 ``invalid_purpose`` unless ``purpose`` is ``"fine-tune"``."""
    if purpose != FINE_TUNE:
        message = f"Invalid purpose {purpose!r}: only {FINE_TUNE!r} is supported"
        raise APIError(400, message, code="invalid_purpose", param="purpose")


def check_dataset(path: Path, settings: Settings) -> int:
    """The file's number of examples; 400 ``too_many_examples`` past ``settings.max_examples_per_file``,
    ``invalid_file`` for bad data."""
    limits = DatasetLimits(settings.max_json_depth, settings.max_turns_per_example)
    report = validate_dataset(path, limits=limits)
    if report.num_examples > settings.max_examples_per_file:
        message = (
            f"File has {report.num_examples} examples; the limit is {settings.max_examples_per_file} "
            "per file: split it or sample from it"
        )
        raise APIError(400, message, code="too_many_examples", param="file")
    if not report.ok:
        raise invalid_file(report)
    return report.num_examples


def store_upload(
    session: Session,
    settings: Settings,
    project: str,
    upload: BinaryIO,
    filename: str | None,
    purpose: str,
    idempotency_key: str | None = None,
) -> File:
    """Validate and store an uploaded fine-tuning file and record it (committed).

    With an ``idempotency_key`` used before for the same bytes, filename and purpose, the file recorded then
    is returned and nothing new is stored.

    Raises:
        APIError: 400 ``invalid_purpose``, ``too_many_examples`` or ``invalid_file`` (with ``problems``);
            409 ``idempotency_key_reused``; 413 ``file_too_large``.
    """
    check_purpose(purpose)
    label = sanitize_filename(filename)
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=settings.files_dir)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as target:
            size, sha256 = _copy_limited(upload, target, settings.max_upload_bytes, settings)
        body = {"sha256": sha256, "filename": label, "purpose": purpose}
        request = IdempotentRequest.of(
            project, idempotency_key, UPLOAD_ROUTE, body, settings.idempotency_ttl_s
        )
        if earlier := replayed_id(session, request):
            return get_file(session, project, earlier)
        check_storage_quota(session, settings, project, size, "file")
        num_examples = check_dataset(temp, settings)
        file_id = new_id(FILE_PREFIX)
        final = uploaded_file_path(settings, file_id)
        replace_durably(temp, final)  # on disk before the commit that makes it visible
    finally:
        temp.unlink(missing_ok=True)
    reserve_storage(session, settings, project, size, "file", stored=final)
    row = File(id=file_id, project_id=project, filename=label, purpose=purpose, num_examples=num_examples)
    row.bytes, row.sha256, row.storage_path, row.status = size, sha256, str(final), "processed"
    return _record(session, request, row, final)


def _record(session: Session, request: IdempotentRequest | None, row: File, stored: Path) -> File:
    """Commit ``row``; its stored bytes are removed unless it is the file the request answers with."""
    session.add(row)
    try:
        earlier = commit_once(session, request, row.id)
    except BaseException:
        stored.unlink(missing_ok=True)
        raise
    if earlier is None:
        return row
    stored.unlink(missing_ok=True)  # a concurrent request with the same key stored the file first
    return get_file(session, row.project_id, earlier)


def find_file(session: Session, project: str, file_id: str) -> File | None:
    """The project's file ``file_id``, or None: another project's file is as absent as an unknown one."""
    row = session.get(File, file_id)
    return row if row is not None and row.project_id == project else None


def get_file(session: Session, project: str, file_id: str, param: str | None = None) -> File:
    """The project's file ``file_id``; 404 if there is none."""
    row = find_file(session, project, file_id)
    if row is None:
        raise not_found("file", file_id, param=param)
    return row


def list_files(
    session: Session, project: str, *, purpose: str | None, after: str | None, limit: int
) -> Page[File]:
    """The project's files newest first."""
    statement = select(File).where(File.project_id == project)
    if purpose is not None:
        statement = statement.where(File.purpose == purpose)
    return paginate(session, statement, File.id, after=after, limit=limit)


def delete_file(session: Session, project: str, file_id: str) -> None:
    """Delete the project's file record and its stored bytes (committed); 404 if there is none, 409
    ``file_in_use`` while an unfinished job uses it."""
    row = get_file(session, project, file_id)
    ensure_file_unused(session, project, file_id)
    path = Path(row.storage_path)
    session.delete(row)
    session.commit()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def count_examples(row: File) -> int:
    """The file's number of examples: recorded at upload, or (a file from before that) its non-blank lines."""
    if row.num_examples is not None:
        return row.num_examples
    count = 0
    with open(row.storage_path, "rb") as handle:
        for line in handle:
            count += bool(line.strip())
    row.num_examples = count  # recorded with the caller's transaction: counted once per file
    return count
