"""``diablo eval MODEL --file F``: a local file is uploaded then evaluated, a file id is evaluated as is; the
real API serves the tiny model."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI

from api.main import create_app
from tests.api.conftest import jsonl
from tests.api.tiny_serving import TINY_MODEL, TinyServing, tiny_fixture, tiny_settings  # noqa: F401
from tests.cli.conftest import diablo

pytestmark = pytest.mark.integration


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def url(tmp_path: Path, sqlite_url: str, tiny: TinyServing, serve_app: Callable[[FastAPI], str]) -> str:
    return serve_app(create_app(tiny_settings(tmp_path / "data", sqlite_url, tiny)))


def test_a_local_file_is_uploaded_and_scored(url: str, tmp_path: Path) -> None:
    path = tmp_path / "held_out.jsonl"
    path.write_bytes(jsonl([chat("1 + 1?", "2"), chat("2 + 2?", "4")]))
    scored = diablo(url, "eval", TINY_MODEL, "--file", str(path), "--json")
    assert scored.exit_code == 0, scored.output
    body = json.loads(scored.stdout)
    assert (body["object"], body["model"], body["n"]) == ("evaluation", TINY_MODEL, 2)
    assert [s["line"] for s in body["samples"]] == [1, 2] and 0 <= body["exact_match"] <= body[
        "contains"
    ] <= 1
    assert "Uploaded held_out.jsonl as file-" in scored.stderr
    # The uploaded id evaluates the same (greedy answers), and the summary names the three numbers.
    again = diablo(url, "eval", TINY_MODEL, "--file", body["file"], "--answers")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith(
        f"exact match {body['exact_match']:.3f}, contains {body['contains']:.3f}, n 2"
    )
    assert "reference" in again.stdout and "Uploaded" not in again.stderr


def test_errors_end_the_command_with_the_apis_message(url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(chat("a", "b"))
        + "\n"
        + json.dumps({"messages": [{"role": "assistant", "content": "x"}]})
        + "\n"
    )
    bad = diablo(url, "eval", TINY_MODEL, "--file", str(path))
    assert bad.exit_code != 0 and "invalid_evaluation_file" in bad.stderr and "line 2" in bad.stderr
    missing = diablo(url, "eval", "ft:tiny::nope", "--file", "file-nope")
    assert missing.exit_code != 0 and "not_found" in missing.stderr


def test_jobs_create_names_an_evaluation_file(url: str, tmp_path: Path) -> None:
    path = tmp_path / "examples.jsonl"
    path.write_bytes(jsonl([chat(f"{i} + 1?", str(i + 1)) for i in range(4)]))
    file_id = diablo(url, "files", "upload", str(path)).stdout.strip()
    args = ["--training-file", file_id, "--evaluation-file", file_id, "--model", TINY_MODEL, "--json"]
    created = diablo(url, "jobs", "create", *args)
    assert created.exit_code == 0, created.output
    job = json.loads(created.stdout)
    assert job["evaluation_file"] == file_id
    shown = diablo(url, "jobs", "get", job["id"])
    assert shown.exit_code == 0 and re.search(rf"evaluation file\s+{file_id}", shown.stdout)
