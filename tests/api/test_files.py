"""/v1/files: upload, validation problems with line numbers, size limit, list/get/content/delete."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.errors import APIError
from api.upload_limit import MULTIPART_OVERHEAD, UploadSizeLimit
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, assert_error, jsonl, upload

NO_ASSISTANT = {"messages": [{"role": "user", "content": "hi"}]}
MISSING_ROLE = {"messages": [{"content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_upload_list_get_content_delete(client: TestClient, settings: Settings) -> None:
    content = jsonl([CHAT_EXAMPLE] * 3)
    response = upload(client, content, filename="train.jsonl")
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["id"].startswith("file-")
    assert created["object"] == "file"
    assert created["bytes"] == len(content)
    assert created["filename"] == "train.jsonl"
    assert created["purpose"] == "fine-tune"
    assert created["status"] == "processed"
    assert isinstance(created["created_at"], int)
    assert (settings.files_dir / f"{created['id']}.jsonl").read_bytes() == content

    listed = client.get("/v1/files").json()
    assert listed["object"] == "list"
    assert [f["id"] for f in listed["data"]] == [created["id"]]
    assert listed["has_more"] is False
    assert client.get(f"/v1/files/{created['id']}").json() == created
    assert client.get(f"/v1/files/{created['id']}/content").content == content

    deleted = client.delete(f"/v1/files/{created['id']}")
    assert deleted.json() == {"id": created["id"], "object": "file", "deleted": True}
    assert not (settings.files_dir / f"{created['id']}.jsonl").exists()
    assert_error(client.get(f"/v1/files/{created['id']}"), 404, "not_found")
    assert_error(client.get(f"/v1/files/{created['id']}/content"), 404, "not_found")
    assert_error(client.delete(f"/v1/files/{created['id']}"), 404, "not_found")
    assert client.get("/v1/files").json()["data"] == []


def test_files_list_newest_first_with_pagination(client: TestClient) -> None:
    ids = [upload(client, jsonl([CHAT_EXAMPLE])).json()["id"] for _ in range(3)]
    first = client.get("/v1/files", params={"limit": 2}).json()
    assert [f["id"] for f in first["data"]] == [ids[2], ids[1]]
    assert first["has_more"] is True
    rest = client.get("/v1/files", params={"limit": 2, "after": first["last_id"]}).json()
    assert [f["id"] for f in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False


def test_filename_is_sanitized_and_never_a_path(client: TestClient, settings: Settings) -> None:
    response = upload(client, jsonl([CHAT_EXAMPLE]), filename="../../etc/pa$ss?wd.jsonl")
    body = response.json()
    assert body["filename"] == "pa_ss_wd.jsonl"
    stored = sorted(p.name for p in settings.files_dir.iterdir())
    assert stored == [f"{body['id']}.jsonl"]


@pytest.mark.parametrize(
    ("content", "line", "code"),
    [
        (jsonl([CHAT_EXAMPLE] * 2) + b"{not json\n", 3, "invalid_json"),
        (jsonl([CHAT_EXAMPLE, MISSING_ROLE]), 2, "missing_role"),
        (jsonl([NO_ASSISTANT]), 1, "no_assistant_message"),
        (b"", 0, "empty_file"),
        (b"\n\n", 0, "empty_file"),
    ],
    ids=["invalid-json-line-3", "missing-role", "no-assistant", "empty", "blank-lines"],
)
def test_invalid_files_are_refused_with_line_numbers(
    client: TestClient, settings: Settings, content: bytes, line: int, code: str
) -> None:
    error = assert_error(upload(client, content), 400, "invalid_file", "file")
    assert error["type"] == "invalid_request_error"
    assert {"line": line, "code": code} == {k: error["problems"][0][k] for k in ("line", "code")}
    if line:
        assert f"line {line}:" in error["message"]
    assert client.get("/v1/files").json()["data"] == []
    assert list(settings.files_dir.iterdir()) == []


def test_many_problems_are_summarised(client: TestClient) -> None:
    content = b"".join(b"[1]\n" for _ in range(8))
    error = assert_error(upload(client, content), 400, "invalid_file", "file")
    assert len(error["problems"]) == 8
    assert "line 5:" in error["message"]
    assert "(and 3 more)" in error["message"]


def test_upload_over_the_limit_is_413(client: TestClient, settings: Settings) -> None:
    line = json.dumps(CHAT_EXAMPLE).encode() + b"\n"
    content = line * (settings.max_upload_bytes // len(line) + 1)
    assert len(content) > settings.max_upload_bytes
    assert_error(upload(client, content), 413, "file_too_large", "file")
    assert list(settings.files_dir.iterdir()) == []


def test_announced_oversized_body_is_refused_before_reading(client: TestClient, settings: Settings) -> None:
    response = upload(client, b"x" * (settings.max_upload_bytes * 3))
    assert_error(response, 413, "file_too_large", "file")
    assert response.headers["connection"] == "close"


def test_streamed_body_stops_being_read_past_the_limit() -> None:
    chunk, limit = 8192, 16 * 1024
    pulled: list[int] = []

    async def receive() -> dict:
        pulled.append(chunk)
        return {"type": "http.request", "body": b"x" * chunk, "more_body": len(pulled) < 1000}

    async def app(scope: dict, receive_: Any, send: Any) -> None:
        while (await receive_())["more_body"]:
            pass

    guard = UploadSizeLimit(app, path="/v1/files", max_bytes=limit)
    scope = {"type": "http", "method": "POST", "path": "/v1/files", "headers": []}
    with pytest.raises(APIError) as error:
        asyncio.run(guard(scope, receive, None))
    assert (error.value.status, error.value.code) == (413, "file_too_large")
    assert sum(pulled) <= limit + MULTIPART_OVERHEAD + chunk


def test_wrong_or_missing_purpose(client: TestClient) -> None:
    wrong = upload(client, jsonl([CHAT_EXAMPLE]), purpose="assistants")
    assert "fine-tune" in assert_error(wrong, 400, "invalid_purpose", "purpose")["message"]
    missing = client.post("/v1/files", files={"file": ("t.jsonl", jsonl([CHAT_EXAMPLE]))})
    assert_error(missing, 400, "missing_required_parameter", "purpose")
    no_file = client.post("/v1/files", data={"purpose": "fine-tune"})
    assert_error(no_file, 400, "missing_required_parameter", "file")
