"""Hostile and broken input: paths in names, malformed bodies, huge lines, bad bytes, misplaced fields.

Every answer is a 4xx with a code (never a 5xx), nothing is written or removed outside the data folders,
and no model is ever loaded from a path the caller names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.errors import MAX_MESSAGE_CHARS, MAX_PARAM_CHARS, error_body
from api.main import create_app
from registry.artifacts import fine_tuned_model_name
from registry.models import File
from registry.settings import Settings
from registry.storage import safe_dir_name
from tests.api.conftest import CHAT_EXAMPLE, assert_error, create_job, jsonl, make_settings, upload

JOBS = "/v1/fine_tuning/jobs"
LABEL = re.compile(r"[A-Za-z0-9._ -]+")
MIB = 1024 * 1024


def tree(folder: Path) -> set[Path]:
    """Every path under ``folder`` but the SQLite registry's files (they come and go with its journal)."""
    return {path for path in folder.rglob("*") if not path.name.startswith("registry.db")}


@pytest.mark.parametrize(
    "filename",
    ["../../etc/passwd", "a/b\\c\x00.jsonl", "..", "/abs/path.jsonl", "\u202egnp.jsonl", "x" * 600],
)
def test_file_names_are_labels_never_paths(
    client: TestClient, settings: Settings, db: Session, tmp_path: Path, filename: str
) -> None:
    outside = tree(tmp_path) - tree(settings.data_dir)
    response = upload(client, jsonl([CHAT_EXAMPLE]), filename=filename)
    assert response.status_code == 200, response.text
    label = response.json()["filename"]
    assert LABEL.fullmatch(label) and label not in (".", "..") and len(label) <= 255
    stored = Path(db.get_one(File, response.json()["id"]).storage_path).resolve()
    assert stored.parent == settings.files_dir.resolve()
    assert tree(tmp_path) - tree(settings.data_dir) == outside
    download = client.get(f"/v1/files/{response.json()['id']}/content")
    assert download.status_code == 200 and download.content == jsonl([CHAT_EXAMPLE])
    assert "/" not in download.headers["content-disposition"].split("filename", 1)[1]


@pytest.mark.parametrize("suffix", ["../../x", "a\x00b", "ok/ü:x", "..", " "])
def test_odd_suffixes_never_reach_a_path(client: TestClient, settings: Settings, suffix: str) -> None:
    response = create_job(client, suffix=suffix)
    assert response.status_code == 200, response.text
    job = response.json()
    name = fine_tuned_model_name(job["model"], job["id"], job["suffix"])
    assert re.fullmatch(r"[A-Za-z0-9._-]*", name.split(":")[2])
    directory = (settings.adapters_dir / safe_dir_name(name)).resolve()
    assert directory.parent == settings.adapters_dir.resolve()


@pytest.mark.parametrize(
    "model_id",
    ["..%2F..%2Fsecret", "ft:x:..%2F..%2F..%2Fsecret", "%2E%2E", "a/../../secret", "..\\secret"],
)
def test_model_ids_with_traversal_are_404_and_touch_nothing(
    client: TestClient, settings: Settings, tmp_path: Path, model_id: str
) -> None:
    sentinels = [tmp_path / "secret", settings.data_dir / "secret", settings.adapters_dir.parent / "x"]
    for sentinel in sentinels:
        sentinel.write_text("keep")
    before = tree(tmp_path)
    for method in ("GET", "DELETE"):
        response = client.request(method, f"/v1/models/{model_id}")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] in ("model_not_found", "not_found")
    assert tree(tmp_path) == before
    assert all(sentinel.read_text() == "keep" for sentinel in sentinels)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/ft:x%00"),
        ("DELETE", "/v1/models/%00"),
        ("GET", "/v1/files/file-%00"),
        ("GET", "/v1/files?after=%00&purpose=%00"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-%00/events"),
        ("POST", "/v1/fine_tuning/jobs/%00/cancel"),
    ],
)
def test_nul_characters_in_ids_are_client_errors(client: TestClient, method: str, path: str) -> None:
    # Postgres cannot hold NUL in text (SQLite can): either way the answer is a 4xx, never a 500.
    response = client.request(method, path)
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code != 200:
        assert response.json()["error"]["code"] in ("invalid_value", "not_found", "model_not_found")


def test_a_nul_character_in_a_body_id_is_a_client_error(client: TestClient) -> None:
    response = create_job(client, training_file="file-\x00")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_value", "file_not_found")


def test_a_model_path_is_never_a_base_model(client: TestClient, tmp_path: Path) -> None:
    checkpoint = tmp_path / "elsewhere" / "tiny"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    for model in (str(checkpoint), "../elsewhere/tiny", f"file://{checkpoint}"):
        assert_error(create_job(client, model=model), 400, "model_not_found", "model")
        assert client.get(f"/v1/models/{model}").status_code == 404


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),  # no boundary
        ("multipart/form-data; boundary=", b"abc"),
        ("multipart/form-data; boundary=zz", b"\x00\xff" * 100),
        (
            "multipart/form-data; boundary=abc",  # truncated in the middle of the file part
            b'--abc\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n{"messages"',
        ),
        ("application/json", b'{"file": "x", "purpose": "fine-tune"}'),
        ("text/plain", b"hello"),
    ],
)
def test_malformed_uploads_are_400(
    client: TestClient, settings: Settings, content_type: str, body: bytes
) -> None:
    response = client.post("/v1/files", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"]
    assert [p.name for p in settings.files_dir.iterdir()] == []


def test_a_text_field_in_place_of_the_file_is_400(client: TestClient) -> None:
    response = client.post("/v1/files", data={"purpose": "fine-tune", "file": "not a file"})
    assert_error(response, 400, "invalid_value", "file")


@pytest.mark.parametrize(
    "body",
    [b'{"model": ', b"", b"[1, 2]", b'"text"', b'{"model": "\xff\xfe"}', b"[" * 50_000 + b"]" * 50_000],
)
def test_malformed_json_bodies_are_400(client: TestClient, body: bytes) -> None:
    response = client.post(JOBS, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in (
        "invalid_json",
        "invalid_value",
        "missing_required_parameter",
        "bad_request",
    )


def test_unknown_request_fields_are_400_naming_them(client: TestClient) -> None:
    error = assert_error(create_job(client, bogus=1), 400, "invalid_value", "bogus")
    assert "bogus" in error["message"]
    method = {"type": "diablo", "diablo": {"hyperparameters": {}, "extra": True}}
    assert_error(create_job(client, method=method), 400, "invalid_value", "method.diablo.extra")


@pytest.fixture
def roomy_client(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    """A client whose upload limit (32 MiB) admits a 24 MB line, with few turns allowed per example."""
    settings = make_settings(
        tmp_path / "roomy", database_url, max_upload_bytes=32 * MIB, max_turns_per_example=8
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def long_example(size: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "a" * size}, {"role": "assistant", "content": "b"}]}


def test_a_5mb_line_is_accepted_or_refused_but_never_breaks(roomy_client: TestClient) -> None:
    valid = upload(roomy_client, jsonl([long_example(5 * MIB), CHAT_EXAMPLE]))
    assert valid.status_code == 200, valid.text
    assert valid.json()["bytes"] > 5 * MIB
    garbage = upload(roomy_client, b"x" * (5 * MIB) + b"\n")
    error = assert_error(garbage, 400, "invalid_file", "file")
    assert [(p["line"], p["code"]) for p in error["problems"]] == [(1, "invalid_json")]


def test_invalid_utf8_names_its_line(client: TestClient) -> None:
    content = jsonl([CHAT_EXAMPLE]) + b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}\n'
    error = assert_error(upload(client, content), 400, "invalid_file", "file")
    assert [(p["line"], p["code"]) for p in error["problems"]] == [(2, "invalid_utf8")]
    assert "line 2" in error["message"]


@pytest.mark.parametrize(
    ("example", "code"),
    [
        (
            {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "unknown_role",
        ),
        ({"messages": CHAT_EXAMPLE["messages"], "extra": 1}, "unknown_key"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x", "evil": 1},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "unknown_key",
        ),
    ],
)
def test_roles_and_fields_that_do_not_belong_are_refused(client: TestClient, example: Any, code: str) -> None:
    error = assert_error(upload(client, jsonl([CHAT_EXAMPLE, example])), 400, "invalid_file", "file")
    assert (error["problems"][0]["line"], error["problems"][0]["code"]) == (2, code)


def test_a_file_of_json_that_is_not_an_object_is_refused(client: TestClient) -> None:
    content = b"[1, 2]\n" + json.dumps("text").encode() + b"\n"
    error = assert_error(upload(client, content), 400, "invalid_file", "file")
    assert [p["line"] for p in error["problems"]] == [1, 2]


SMALL_ANSWER = 16 * 1024  # bytes: 100 short problems and a message fit, an echo of the upload does not


def test_a_24mb_line_gets_its_answer(roomy_client: TestClient) -> None:
    valid = upload(roomy_client, jsonl([long_example(24 * MIB)]))
    assert valid.status_code == 200, valid.text[:1000]
    garbage = upload(roomy_client, b'{"messages": "' + b"x" * (24 * MIB))
    error = assert_error(garbage, 400, "invalid_file", "file")
    assert [(p["line"], p["code"]) for p in error["problems"]] == [(1, "invalid_json")]
    assert len(garbage.content) < SMALL_ANSWER


def test_a_20mb_upload_with_a_giant_key_answers_small(roomy_client: TestClient) -> None:
    giant = {**CHAT_EXAMPLE, "k" * (20 * MIB): 1}
    many = {**CHAT_EXAMPLE, **{f"key-{i}-" + "k" * 100: i for i in range(1000)}}
    response = upload(roomy_client, jsonl([giant, many]))
    error = assert_error(response, 400, "invalid_file", "file")
    assert [(p["line"], p["code"]) for p in error["problems"]] == [(1, "unknown_key"), (2, "unknown_key")]
    assert "(and 997 more)" in error["problems"][1]["message"]
    assert len(response.content) < SMALL_ANSWER


def test_deep_nesting_in_a_file_is_a_line_numbered_400(client: TestClient) -> None:
    content = jsonl([CHAT_EXAMPLE]) + b"[" * 10_000 + b"]" * 10_000 + b"\n" + b"[" * 10_000 + b"\n"
    error = assert_error(upload(client, content), 400, "invalid_file", "file")
    assert [(p["line"], p["code"]) for p in error["problems"]] == [(2, "json_too_deep"), (3, "json_too_deep")]
    assert "line 2: JSON nests deeper than 32 levels" in error["message"]


def test_turns_per_example_are_limited(roomy_client: TestClient) -> None:
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert upload(roomy_client, jsonl([{"messages": turns * 4}])).status_code == 200
    error = assert_error(upload(roomy_client, jsonl([{"messages": turns * 5}])), 400, "invalid_file", "file")
    assert [(p["line"], p["code"]) for p in error["problems"]] == [(1, "too_many_turns")]
    assert "line 1: 'messages' has 10 messages, more than the limit of 8 per example" in error["message"]


def test_at_most_100_problems_are_listed_and_all_are_counted(client: TestClient) -> None:
    response = upload(client, b"[1]\n" * 5000)
    error = assert_error(response, 400, "invalid_file", "file")
    assert [p["line"] for p in error["problems"]] == list(range(1, 101))
    assert error["num_problems"] == 5000
    assert "(and 4995 more)" in error["message"]
    assert len(response.content) < SMALL_ANSWER


def test_an_error_answer_stays_small_whatever_the_request_named(client: TestClient) -> None:
    field = "f" * 200_000
    response = client.post(JOBS, json={"model": "default", "training_file": "file-x", field: 1})
    error = assert_error(response, 400, "invalid_value", "f" * MAX_PARAM_CHARS + "…")
    assert field[:MAX_PARAM_CHARS] in error["message"]
    assert len(response.content) < 8 * 1024


def test_the_error_envelope_cuts_message_and_param() -> None:
    body = error_body("m" * 100_000, "invalid_request_error", "code", "p" * 100_000)["error"]
    assert body["message"] == "m" * MAX_MESSAGE_CHARS + "…"
    assert body["param"] == "p" * MAX_PARAM_CHARS + "…" and body["code"] == "code"
    assert error_body("short", "t", "c", "p")["error"] == {
        "message": "short",
        "type": "t",
        "param": "p",
        "code": "c",
    }
