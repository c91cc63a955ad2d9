"""max_length at job creation (#17): "auto" resolved and every example checked with the model's tokenizer,
in the API process, before the job is queued; and ``dry_run``, which checks alike and creates nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.services import example_lengths
from diablo_core.data.tokenization import tokenize_example
from diablo_core.models.catalog import DEFAULT_CHECKPOINT_DIR
from registry.models import Job, JobEvent
from registry.settings import Settings
from registry.storage import token_counts_dir
from tests.api.conftest import CHAT_EXAMPLE, assert_error, create_job, jsonl, upload
from tests.core.tiny_tokenizer import make_tiny_tokenizer

CONTEXT = 512
TINY = "tiny-chat"


def chat(reply_chars: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Say x"},
            {"role": "assistant", "content": "x" * reply_chars},
        ]
    }


def tokens(example: dict[str, Any]) -> int:
    return len(tokenize_example(example, make_tiny_tokenizer(), None).input_ids)


def add_model(settings: Settings, name: str) -> None:
    """A base model's tokenizer and config (no weights: the API never loads them)."""
    directory = settings.data_dir / "models" / name
    make_tiny_tokenizer().save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps({"max_position_embeddings": CONTEXT}))


@pytest.fixture
def models(settings: Settings) -> None:
    add_model(settings, TINY)
    add_model(settings, DEFAULT_CHECKPOINT_DIR)  # the default model, as converted by a worker


def file_id(client: TestClient, examples: list[dict[str, Any]]) -> str:
    response = upload(client, jsonl(examples))
    assert response.status_code == 200, response.text
    return response.json()["id"]


def hyperparameters(job: dict[str, Any]) -> dict[str, Any]:
    return job["method"]["diablo"]["hyperparameters"]


@pytest.mark.usefixtures("models")
@pytest.mark.parametrize("model", [TINY, "default"])
def test_auto_is_the_longest_example_of_both_files(client: TestClient, model: str) -> None:
    training, validation = [chat(10), chat(90), chat(30)], [chat(120)]
    body = {"training_file": file_id(client, training), "validation_file": file_id(client, validation)}
    response = create_job(client, model=model, **body)
    assert response.status_code == 200, response.text
    assert hyperparameters(response.json())["max_length"] == tokens(chat(120))
    only_training = create_job(client, model=model, training_file=body["training_file"]).json()
    assert hyperparameters(only_training)["max_length"] == tokens(chat(90))


@pytest.mark.usefixtures("models")
def test_an_example_past_an_explicit_max_length_is_refused_with_its_line(client: TestClient) -> None:
    examples = [chat(5), CHAT_EXAMPLE, chat(80), chat(10), chat(200)]
    method = {"type": "diablo", "diablo": {"hyperparameters": {"max_length": 128}}}
    response = create_job(client, model=TINY, training_file=file_id(client, examples), method=method)
    error = assert_error(response, 400, "example_too_long", "training_file")
    assert (error["line"], error["tokens"], error["limit"]) == (3, tokens(chat(80)), 128)
    assert "line 3:" in error["message"] and "max_length 128" in error["message"]
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


@pytest.mark.usefixtures("models")
def test_under_auto_an_example_past_the_models_context_is_refused(client: TestClient) -> None:
    body = {
        "training_file": file_id(client, [chat(5)]),
        "validation_file": file_id(client, [chat(5), chat(700)]),
    }
    error = assert_error(create_job(client, model=TINY, **body), 400, "example_too_long", "validation_file")
    assert (error["line"], error["limit"]) == (2, CONTEXT)
    assert f"context length {CONTEXT}" in error["message"] and body["validation_file"] in error["message"]


@pytest.mark.usefixtures("models")
def test_an_explicit_max_length_past_the_context_still_stops_at_the_context(client: TestClient) -> None:
    method = {"type": "diablo", "diablo": {"hyperparameters": {"max_length": 4 * CONTEXT}}}
    training = file_id(client, [chat(5), chat(700)])
    error = assert_error(
        create_job(client, model=TINY, training_file=training, method=method),
        400,
        "example_too_long",
        "training_file",
    )
    assert (error["line"], error["limit"]) == (2, CONTEXT)
    assert (
        f"the model's context length {CONTEXT};" in error["message"]
        and "raise max_length" not in error["message"]
    )


def test_without_the_models_tokenizer_the_worker_checks(client: TestClient) -> None:
    """No converted default model in this data dir: "auto" is stored for the worker to resolve."""
    job = create_job(client, training_file=file_id(client, [chat(700)])).json()
    assert hyperparameters(job)["max_length"] == "auto"


@pytest.mark.usefixtures("models")
def test_a_file_is_counted_once_per_tokenizer(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    count = example_lengths.validate_dataset

    def counting(source: Any, **kwargs: Any) -> Any:
        calls.append(str(source))
        return count(source, **kwargs)

    monkeypatch.setattr(example_lengths, "validate_dataset", counting)
    training = file_id(client, [chat(10), chat(40)])
    first = create_job(client, model=TINY, training_file=training).json()
    again = create_job(client, model=TINY, training_file=training).json()
    assert hyperparameters(again)["max_length"] == hyperparameters(first)["max_length"] == tokens(chat(40))
    assert len(calls) == 1 and len(list(token_counts_dir(settings).iterdir())) == 1
    assert create_job(client, model="default", training_file=training).status_code == 200
    assert len(calls) == 2  # another model's tokenizer: counted anew


def counts(db: Session) -> tuple[int, int]:
    return db.scalar(select(func.count()).select_from(Job)), db.scalar(
        select(func.count()).select_from(JobEvent)
    )


@pytest.mark.usefixtures("models")
def test_a_dry_run_answers_the_estimate_and_creates_nothing(client: TestClient, db: Session) -> None:
    training = file_id(client, [chat(10), chat(40), chat(20), chat(30)])
    method = {"type": "diablo", "diablo": {"hyperparameters": {"n_epochs": 2, "batch_size": 2}}}
    answer = create_job(client, model=TINY, training_file=training, method=method, dry_run=True)
    assert answer.status_code == 200, answer.text
    estimate = answer.json()
    assert estimate["object"] == "fine_tuning.job.estimate"
    assert (estimate["total_steps"], estimate["num_examples"], estimate["model"]) == (4, 4, TINY)
    assert hyperparameters(estimate)["max_length"] == tokens(chat(40))
    assert estimate["hyperparameters"] == {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 1.0}
    file_tokens = sum(tokens(chat(n)) for n in (10, 40, 20, 30))
    assert estimate["estimated_tokens"] == 2 * file_tokens  # counted, not guessed from bytes
    assert counts(db) == (0, 0)
    same = client.post(
        "/v1/fine_tuning/jobs/estimate", json={"model": TINY, "training_file": training, "method": method}
    )
    assert same.json() == estimate
    created = create_job(client, model=TINY, training_file=training, method=method).json()
    assert created["object"] == "fine_tuning.job" and created["method"] == estimate["method"]


@pytest.mark.usefixtures("models")
def test_a_dry_run_refuses_what_a_create_refuses(client: TestClient, db: Session, settings: Settings) -> None:
    method = {"type": "diablo", "diablo": {"hyperparameters": {"max_length": 16}}}
    response = create_job(
        client, model=TINY, training_file=file_id(client, [chat(40)]), method=method, dry_run=True
    )
    assert_error(response, 400, "example_too_long", "training_file")
    training = file_id(client, [chat(5)] * 4)
    for _ in range(settings.max_concurrent_jobs_per_project):
        assert create_job(client, model=TINY, training_file=training).status_code == 200
    jobs = counts(db)[0]
    refused = create_job(client, model=TINY, training_file=training, dry_run=True)
    assert_error(refused, 429, "concurrent_job_limit")
    assert counts(db)[0] == jobs


@pytest.mark.usefixtures("models")
def test_a_preference_pair_counts_its_longer_sequence(client: TestClient) -> None:
    def pair(preferred: int, other: int) -> dict[str, Any]:
        return {
            "input": {"messages": [{"role": "user", "content": "Say x"}]},
            "preferred_output": [{"role": "assistant", "content": "x" * preferred}],
            "non_preferred_output": [{"role": "assistant", "content": "x" * other}],
        }

    training = file_id(client, [pair(5, 10), pair(5, 60)])
    job = create_job(client, model=TINY, training_file=training, method={"type": "dpo"}).json()
    assert job["method"]["dpo"]["hyperparameters"]["max_length"] == tokens(chat(60))
    tight = {"type": "dpo", "dpo": {"hyperparameters": {"max_length": tokens(chat(30))}}}
    error = assert_error(
        create_job(client, model=TINY, training_file=training, method=tight),
        400,
        "example_too_long",
        "training_file",
    )
    assert error["line"] == 2


def test_an_unreadable_tokenizer_leaves_the_check_to_the_worker(
    client: TestClient, settings: Settings
) -> None:
    add_model(settings, TINY)
    (settings.data_dir / "models" / TINY / "tokenizer.json").write_text("{not json")
    job = create_job(client, model=TINY, training_file=file_id(client, [chat(700)])).json()
    assert hyperparameters(job)["max_length"] == "auto"
