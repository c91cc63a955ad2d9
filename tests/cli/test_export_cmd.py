"""``diablo models download|export``, ``diablo jobs events|checkpoints`` and ``diablo files download`` against
the real API serving the tiny local model, with adapters registered as a worker would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import gguf
import pytest
from fastapi import FastAPI
from transformers import AutoConfig

from api.main import create_app
from diablo_core.methods.diablo.adapter_io import CONFIG_FILE, WEIGHTS_FILE
from registry.artifacts import add_checkpoint
from registry.db import session_scope
from registry.jobs import add_event, create_job
from tests.api.tiny_serving import TinyServing, build_tiny_serving, sha256_of, tiny_settings
from tests.cli.conftest import Server, diablo, upload

pytestmark = pytest.mark.integration
MODEL = "ft:tiny::a"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyServing:
    return build_tiny_serving(tmp_path_factory.mktemp("tiny-cli"))


@pytest.fixture
def tiny_server(
    tmp_path: Path, sqlite_url: str, tiny: TinyServing, serve_app: Callable[[FastAPI], str]
) -> Server:
    settings = tiny_settings(tmp_path / "data", sqlite_url, tiny)
    url = serve_app(create_app(settings))  # started: the database is migrated
    tiny.install(settings, MODEL, "a")
    return Server(url, settings)


def test_download_writes_the_adapter_files_and_refuses_to_overwrite(tiny_server, tiny, tmp_path) -> None:
    output = tmp_path / "out" / "adapter"
    done = diablo(tiny_server, "models", "download", MODEL, "--output", str(output))
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in output.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert sha256_of(output) == sha256_of(tiny.adapters["a"])
    assert [p.name for p in output.parent.iterdir()] == ["adapter"]  # no .part or archive left behind
    again = diablo(tiny_server, "models", "download", MODEL, "--output", str(output))
    assert again.exit_code == 2 and "--force" in again.stderr
    assert diablo(tiny_server, "models", "download", MODEL, "-o", str(output), "--force").exit_code == 0


def test_export_merged_and_gguf(tiny_server, tmp_path) -> None:
    merged = tmp_path / "merged"
    done = diablo(tiny_server, "models", "export", MODEL, "--format", "merged", "--output", str(merged))
    assert done.exit_code == 0, done.output
    assert AutoConfig.from_pretrained(merged).model_type == "llama"
    assert (merged / "model.safetensors").is_file() and (merged / "README.md").is_file()
    path = tmp_path / "model.gguf"
    args = ["models", "export", MODEL, "--format", "gguf", "--quantization", "q8_0", "-o", str(path)]
    done = diablo(tiny_server, *args)
    assert done.exit_code == 0, done.output
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    assert not path.with_name("model.gguf.part").exists()


def test_export_failures_have_exit_codes_and_leave_no_output(tiny_server, tmp_path) -> None:
    output = tmp_path / "out" / "x.gguf"
    base = diablo(tiny_server, "models", "export", "tiny", "--format", "gguf", "-o", str(output))
    assert base.exit_code == 2 and "model_not_exportable" in base.stderr
    unknown = diablo(tiny_server, "models", "export", "ft:tiny::none", "--format", "gguf", "-o", str(output))
    assert unknown.exit_code == 1 and "model_not_found" in unknown.stderr
    assert not output.parent.exists() or list(output.parent.iterdir()) == []
    unreachable = diablo("http://127.0.0.1:9", "models", "download", MODEL, "-o", str(tmp_path / "a"))
    assert unreachable.exit_code == 3


def test_job_events_and_checkpoints(tiny_server) -> None:
    with session_scope(tiny_server.settings.database_url) as session:
        job_id = create_job(session, model="tiny", training_file="file-x").id
        add_event(session, job_id, "info", "Step 5/10: training loss=1.2500")
        add_checkpoint(session, job_id, 5, f"{MODEL}:ckpt-step-5", metrics={"train_loss": 1.25})
    events = diablo(tiny_server, "jobs", "events", job_id)
    assert events.exit_code == 0, events.output
    assert "Step 5/10: training loss=1.2500" in events.stdout
    listed = diablo(tiny_server, "jobs", "checkpoints", job_id)
    assert listed.exit_code == 0, listed.output
    assert f"{MODEL}:ckpt-step-5" in listed.stdout and "train_loss=1.25" in listed.stdout
    page = json.loads(diablo(tiny_server, "jobs", "checkpoints", job_id, "--json").stdout)
    assert [c["step_number"] for c in page["data"]] == [5]
    missing = diablo(tiny_server, "jobs", "checkpoints", "ftjob-none")
    assert missing.exit_code == 1


def test_files_download_gives_the_uploaded_bytes(tiny_server, training_path, tmp_path) -> None:
    file_id = upload(tiny_server, training_path)
    output = tmp_path / "copy.jsonl"
    done = diablo(tiny_server, "files", "download", file_id, "--output", str(output))
    assert done.exit_code == 0, done.output
    assert output.read_bytes() == training_path.read_bytes()
    assert diablo(tiny_server, "files", "download", file_id, "--output", str(output)).exit_code == 2
