"""``diablo jobs create|list|get|cancel`` against the real API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry.base_models import DEFAULT_MODEL_ID
from tests.cli.conftest import Server, diablo, upload
from tests.core.tiny_tokenizer import make_tiny_tokenizer

pytestmark = pytest.mark.integration


def test_create_maps_options_to_the_job_fields(server: Server, training_path: Path) -> None:
    file_id = upload(server, training_path)
    result = diablo(
        server, "jobs", "create", "--training-file", file_id, "--validation-file", file_id,
        "--n-epochs", "2", "--batch-size", "2", "--learning-rate", "0.001", "--num-blocks", "8",
        "--max-steps", "5", "--warmup-steps", "1", "--target-modules", "q_proj, v_proj",
        "--max-length", "128", "--suffix", "cli", "--seed", "7", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["model"], job["training_file"]) == (DEFAULT_MODEL_ID, file_id)
    assert job["validation_file"] == file_id
    assert (job["status"], job["suffix"], job["seed"]) == ("queued", "cli", 7)
    # --max-steps decides the epochs: 5 steps of batch 2 over the file's 4 examples start 3 of them.
    assert job["hyperparameters"]["n_epochs"] == 3 and job["hyperparameters"]["batch_size"] == 2
    chosen = job["method"]["diablo"]["hyperparameters"]
    assert (chosen["num_blocks"], chosen["target_modules"]) == (8, ["q_proj", "v_proj"])
    assert (chosen["learning_rate"], chosen["max_steps"], chosen["warmup_steps"]) == (0.001, 5, 1)
    assert chosen["max_length"] == 128


def test_create_prints_only_the_id_and_uses_the_default_model(server: Server, training_path: Path) -> None:
    result = diablo(server, "jobs", "create", "--training-file", upload(server, training_path))
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert result.stdout == f"{job_id}\n" and job_id.startswith("ftjob-")
    assert f"Created {job_id}: queued, model {DEFAULT_MODEL_ID}" in result.stderr
    shown = json.loads(diablo(server, "jobs", "get", job_id, "--json").stdout)
    assert shown["model"] == DEFAULT_MODEL_ID
    assert shown["method"]["diablo"]["hyperparameters"]["num_blocks"] == 64


def test_list_get_and_cancel(server: Server, training_path: Path) -> None:
    file_id = upload(server, training_path)
    first = diablo(server, "jobs", "create", "--training-file", file_id).stdout.strip()
    second = diablo(server, "jobs", "create", "--training-file", file_id).stdout.strip()
    listed = diablo(server, "jobs", "list", "--json")
    assert [job["id"] for job in json.loads(listed.stdout)["data"]] == [second, first]
    older = diablo(server, "jobs", "list", "--after", second, "--limit", "5", "--json")
    assert [job["id"] for job in json.loads(older.stdout)["data"]] == [first]
    table = diablo(server, "jobs", "list")
    assert table.exit_code == 0 and first in table.stdout and "queued" in table.stdout

    details = diablo(server, "jobs", "get", first)
    assert details.exit_code == 0
    assert first in details.stdout and file_id in details.stdout and "queued" in details.stdout

    cancelled = diablo(server, "jobs", "cancel", first, "--json")
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert diablo(server, "jobs", "cancel", second).stdout == f"{second}: cancelled\n"
    again = diablo(server, "jobs", "cancel", first)
    assert again.exit_code == 1
    assert "job_not_cancellable" in again.stderr


def test_refused_requests_exit_2_and_missing_jobs_exit_1(server: Server, training_path: Path) -> None:
    file_id = upload(server, training_path)
    unknown_model = diablo(server, "jobs", "create", "--training-file", file_id, "--model", "gpt-4o-mini")
    assert unknown_model.exit_code == 2
    assert "model_not_found" in unknown_model.stderr and unknown_model.stdout == ""
    missing_file = diablo(server, "jobs", "create", "--training-file", "file-nope")
    assert missing_file.exit_code == 2 and "file_not_found" in missing_file.stderr
    bad_modules = diablo(server, "jobs", "create", "--training-file", file_id, "--target-modules", "q_proj,,")
    assert bad_modules.exit_code == 2 and "--target-modules" in bad_modules.stderr
    missing_job = diablo(server, "jobs", "get", "ftjob-nope")
    assert missing_job.exit_code == 1 and "HTTP 404" in missing_job.stderr


def test_pause_and_resume_show_the_status_in_list_and_get(server: Server, training_path: Path) -> None:
    job_id = diablo(server, "jobs", "create", "--training-file", upload(server, training_path)).stdout.strip()
    paused = diablo(server, "jobs", "pause", job_id)
    assert paused.exit_code == 0 and paused.stdout == f"{job_id}: paused\n"
    assert f"{job_id}  paused" in diablo(server, "jobs", "list").stdout.replace("\u2026", "")
    assert "status            paused" in diablo(server, "jobs", "get", job_id).stdout
    again = diablo(server, "jobs", "pause", job_id)
    assert again.exit_code != 0 and "only queued or running jobs can be paused" in again.stderr
    assert diablo(server, "jobs", "resume", job_id).stdout == f"{job_id}: queued\n"
    assert "only paused jobs can be resumed" in diablo(server, "jobs", "resume", job_id).stderr


def test_estimate_reports_steps_tokens_and_duration_and_creates_nothing(
    server: Server, training_path: Path
) -> None:
    file_id = upload(server, training_path)
    args = ("jobs", "estimate", "--training-file", file_id, "--n-epochs", "2", "--batch-size", "2")
    shown = json.loads(diablo(server, *args, "--json").stdout)
    assert shown["object"] == "fine_tuning.job.estimate" and shown["basis"] == "default"
    assert shown["total_steps"] == -(-shown["num_examples"] // 2) * 2
    line = diablo(server, *args).stdout
    assert line.startswith(
        f"{shown['total_steps']} steps, about {shown['estimated_tokens']:,} tokens, about "
    )
    assert "No job on this model has finished yet" in line
    assert json.loads(diablo(server, "jobs", "list", "--json").stdout)["data"] == []


def test_create_dry_run_prints_the_estimate_and_creates_nothing(server: Server, training_path: Path) -> None:
    file_id = upload(server, training_path)
    args = (
        "jobs",
        "create",
        "--training-file",
        file_id,
        "--n-epochs",
        "2",
        "--max-length",
        "auto",
        "--dry-run",
    )
    line = diablo(server, *args)
    assert line.exit_code == 0, line.output
    # No tokenizer of the default model in this data dir: "auto" is left for the worker to count.
    assert " steps, about " in line.stdout and "max_length auto" in line.stdout
    shown = json.loads(diablo(server, *args, "--json").stdout)
    assert shown["object"] == "fine_tuning.job.estimate" and shown["hyperparameters"]["n_epochs"] == 2
    assert json.loads(diablo(server, "jobs", "list", "--json").stdout)["data"] == []
    watched = diablo(server, *args, "--watch")
    assert watched.exit_code == 2 and "--watch" in watched.stderr
    wrong = diablo(server, "jobs", "create", "--training-file", file_id, "--max-length", "long")
    assert wrong.exit_code == 2 and "--max-length" in wrong.stderr


def test_an_example_past_max_length_is_refused_at_create_with_its_line(
    server: Server, training_path: Path
) -> None:
    directory = server.settings.data_dir / "models" / "tiny-chat"  # a base model the API has the tokenizer of
    make_tiny_tokenizer().save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    file_id = upload(server, training_path)
    args = ("jobs", "create", "--training-file", file_id, "--model", "tiny-chat")
    refused = diablo(server, *args, "--max-length", "16")
    assert refused.exit_code == 2 and "example_too_long" in refused.stderr and "line 1:" in refused.stderr
    counted = diablo(server, *args, "--dry-run")
    assert counted.exit_code == 0 and "max_length auto" not in counted.stdout
    assert json.loads(diablo(server, "jobs", "list", "--json").stdout)["data"] == []
