"""``diablo files upload|list|delete`` against the real API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import CHAT_EXAMPLE
from tests.cli.conftest import Server, diablo, list_ids_and_table, upload

pytestmark = pytest.mark.integration


def test_upload_prints_only_the_new_file_id(server: Server, training_path: Path) -> None:
    result = diablo(server, "files", "upload", str(training_path), "--purpose", "fine-tune")
    assert result.exit_code == 0, result.output
    file_id = result.stdout.strip()
    assert result.stdout == f"{file_id}\n"
    assert file_id.startswith("file-")
    assert "Uploaded train.jsonl" in result.stderr
    stored = httpx.get(f"{server.url}/v1/files/{file_id}").json()
    assert (stored["filename"], stored["bytes"]) == ("train.jsonl", training_path.stat().st_size)


def test_upload_of_a_bad_file_prints_each_problem_with_its_line(server: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = [json.dumps(CHAT_EXAMPLE), "{not json", json.dumps({"prompt_only": 1}), json.dumps(CHAT_EXAMPLE)]
    bad.write_text("\n".join(lines) + "\n")
    result = diablo(server, "files", "upload", str(bad))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "invalid_file" in result.stderr
    problem_lines = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in problem_lines] == ["line 2", "line 3"]
    assert "'messages' is missing" in problem_lines[1]
    assert httpx.get(f"{server.url}/v1/files").json()["data"] == []


def test_upload_of_a_missing_path_is_a_usage_error(server: Server, tmp_path: Path) -> None:
    result = diablo(server, "files", "upload", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_list_and_delete_files(server: Server, training_path: Path) -> None:
    first, second = upload(server, training_path), upload(server, training_path)
    ids, table = list_ids_and_table(server, "files")
    assert ids == [second, first]
    assert first in table and second in table and "train.jsonl" in table

    deleted = diablo(server, "files", "delete", first, "--json")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(deleted.stdout) == {"id": first, "object": "file", "deleted": True}
    assert [item["id"] for item in httpx.get(f"{server.url}/v1/files").json()["data"]] == [second]

    again = diablo(server, "files", "delete", first)
    assert again.exit_code == 1
    assert "HTTP 404" in again.stderr and first in again.stderr
