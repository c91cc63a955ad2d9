"""An upload reaches the disk (file, then its folder's entry) before the commit that makes it visible, and
SQLite commits with ``synchronous=FULL``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from registry.db import get_engine
from registry.settings import Settings
from registry.storage import durable
from tests.api.conftest import CHAT_EXAMPLE, jsonl, upload


def test_an_upload_is_synced_before_it_is_committed(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    happened: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        happened.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def record_commit(session: Session) -> None:
        happened.append(("commit", ""))

    monkeypatch.setattr(durable.os, "fsync", recording_fsync)
    event.listen(Session, "before_commit", record_commit)
    try:
        response = upload(client, jsonl([CHAT_EXAMPLE] * 2))
    finally:
        event.remove(Session, "before_commit", record_commit)
    assert response.status_code == 200, response.text
    files_dir = str(settings.files_dir.resolve())
    temp = next(path for kind, path in happened if kind == "fsync" and path != files_dir)
    assert Path(temp).parent == settings.files_dir.resolve() and temp.endswith(".part")
    syncs = [index for index, (kind, path) in enumerate(happened) if kind == "fsync"]
    dir_sync = happened.index(("fsync", files_dir))
    commit = max(index for index, (kind, _) in enumerate(happened) if kind == "commit")
    assert syncs[0] < dir_sync < commit  # the bytes, then the name, then the row


def test_sqlite_commits_are_fully_synchronous(sqlite_url: str) -> None:
    with get_engine(sqlite_url).connect() as connection:
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
