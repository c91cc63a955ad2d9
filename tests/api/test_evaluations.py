"""Evaluation files: a job names one (checked at creation, answered at each evaluation by the worker), and
``POST /v1/evaluations`` scores any servable model's greedy answers on one, owned like every object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from api.services import evaluations
from diablo_core.evaluation.answers import evaluate_answers
from diablo_core.evaluation.examples import read_eval_examples
from diablo_core.generation.decoding import build_prompt_ids
from diablo_core.models.loading import load_base_model
from registry.db import session_scope
from registry.models import File
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, assert_error, create_job, jsonl, record_adapter, upload
from tests.api.tiny_serving import TINY_MODEL, TinyServing, build_tiny_serving, serving_settings  # noqa: F401

PROMPTS = ["What is 2 + 2?", "Name a colour", "Say something"]


def chat(user: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def upload_examples(client: TestClient, examples: list[dict[str, Any]] | bytes) -> str:
    content = examples if isinstance(examples, bytes) else jsonl(examples)
    response = upload(client, content, filename="eval.jsonl")
    assert response.status_code == 200, response.text
    return response.json()["id"]


def give_to_another_project(settings: Settings, file_id: str) -> None:
    with session_scope(settings.database_url) as session:
        session.get(File, file_id).project_id = "someone-else"


@pytest.fixture(scope="module", name="tiny")
def stopping_tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyServing:
    """The tiny model, with the third token it answers with made an end-of-sequence token: its greedy
    answers then end after two tokens, and a reference of those two tokens is matched exactly."""
    serving = build_tiny_serving(tmp_path_factory.mktemp("tiny-eval"))
    model, tokenizer = serving.base.model, serving.base.tokenizer
    ids = torch.tensor([build_prompt_ids(tokenizer, messages=[{"role": "user", "content": PROMPTS[0]}])])
    first = []
    with torch.no_grad():
        for _ in range(3):
            token = int(model(input_ids=ids).logits[0, -1].argmax())
            first.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert first[2] not in first[:2]
    config_path = serving.model_dir / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = [config["eos_token_id"], first[2]]
    config_path.write_text(json.dumps(config))
    serving.base = load_base_model(str(serving.model_dir))
    return serving


# --- a job's evaluation file -------------------------------------------------------------------------


def test_a_job_names_an_evaluation_file_and_evaluates_along_the_run(client: TestClient) -> None:
    evaluation = upload_examples(client, [chat(p, "4") for p in PROMPTS])
    hyperparameters = {"n_epochs": 2, "batch_size": 2}  # no early stopping: evaluations come with the file
    response = create_job(client, evaluation_file=evaluation, hyperparameters=hyperparameters)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["evaluation_file"] == evaluation
    assert job["method"]["diablo"]["hyperparameters"]["eval_every"] == 1  # 4 steps, about 10 evaluations
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["evaluation_file"] == evaluation
    without = create_job(client, hyperparameters=hyperparameters).json()
    assert (
        without["evaluation_file"] is None
        and without["method"]["diablo"]["hyperparameters"]["eval_every"] is None
    )
    assert_error(client.delete(f"/v1/files/{evaluation}"), 409, "file_in_use", "file_id")


def test_bad_evaluation_files_are_refused_at_creation(client: TestClient, settings: Settings) -> None:
    assistant_first = {"messages": [{"role": "assistant", "content": "hello"}]}
    bad = upload_examples(client, [chat("a", "b"), assistant_first])
    error = assert_error(
        create_job(client, evaluation_file=bad), 400, "invalid_evaluation_file", "evaluation_file"
    )
    assert "line 2" in error["message"]
    prompt_completion = upload_examples(client, [{"prompt": "a", "completion": "b"}])
    assert_error(
        create_job(client, evaluation_file=prompt_completion),
        400,
        "invalid_evaluation_file",
        "evaluation_file",
    )
    assert_error(create_job(client, evaluation_file="file-nope"), 400, "file_not_found", "evaluation_file")
    foreign = upload_examples(client, [chat("a", "b")])
    give_to_another_project(settings, foreign)
    assert_error(create_job(client, evaluation_file=foreign), 400, "file_not_found", "evaluation_file")
    pairs = {"input": {"messages": [{"role": "user", "content": "a"}]}}
    pairs |= {"preferred_output": [{"role": "assistant", "content": "b"}]}
    pairs |= {"non_preferred_output": [{"role": "assistant", "content": "c"}]}
    dpo = create_job(
        client,
        training_file=upload_examples(client, [pairs] * 4),
        evaluation_file=upload_examples(client, [chat("a", "b")]),
        method={"type": "dpo"},
    )
    assert_error(dpo, 400, "invalid_file_format", "evaluation_file")
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


# --- POST /v1/evaluations ----------------------------------------------------------------------------


@pytest.fixture
def answers(tiny: TinyServing) -> list[str]:
    """The tiny model's own greedy answers to ``PROMPTS`` (the first one: two tokens, then its stop token)."""
    examples = [chat(p, "") for p in PROMPTS]
    path = Path(tiny.model_dir.parent / "own.jsonl")
    path.write_bytes(jsonl(examples))
    result = evaluate_answers(tiny.base.model, tiny.base.tokenizer, read_eval_examples(path))
    return [sample.answer for sample in result.samples]


def evaluate(client: TestClient, model: str, file_id: str, **body: Any):
    return client.post("/v1/evaluations", json={"model": model, "file": file_id, **body})


def test_evaluation_scores_the_engines_greedy_answers(client, settings, tiny, answers) -> None:
    assert all(answer for answer in answers)
    references = [answers[0], f"  {answers[0]}\n", "never said"]  # exact, exact after strip, neither
    examples = [chat(PROMPTS[0], r) for r in references]
    file_id = upload_examples(client, examples)
    response = evaluate(client, TINY_MODEL, file_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["object"], body["model"], body["file"], body["n"]) == ("evaluation", TINY_MODEL, file_id, 3)
    assert body["exact_match"] == pytest.approx(2 / 3) and body["contains"] == pytest.approx(2 / 3)
    assert [s["answer"] for s in body["samples"]] == [answers[0]] * 3
    assert [(s["line"], s["exact_match"], s["contains"]) for s in body["samples"]] == [
        (1, True, True),
        (2, True, True),
        (3, False, False),
    ]
    assert len(evaluate(client, TINY_MODEL, file_id, max_samples=1).json()["samples"]) == 1


def test_a_fine_tuned_model_evaluates_with_its_adapter(client, settings, tiny, answers) -> None:
    tiny.install(settings, "ft:tiny::a", "a")
    file_id = upload_examples(client, [chat(PROMPTS[0], answers[0])])
    base = evaluate(client, TINY_MODEL, file_id).json()
    tuned = evaluate(client, "ft:tiny::a", file_id)
    assert tuned.status_code == 200, tuned.text
    assert base["exact_match"] == 1.0
    assert [s["answer"] for s in tuned.json()["samples"]] != [s["answer"] for s in base["samples"]]


def test_another_projects_model_or_file_is_404(client, settings, tiny) -> None:
    file_id = upload_examples(client, [chat("a", "b")])
    tiny.install(settings, "ft:tiny::a", "a")
    # The same files, registered to another project.
    record_adapter(settings, "ft:tiny::theirs", tiny.adapters["a"], 1, base_model=TINY_MODEL, project_id="x")
    assert_error(evaluate(client, "ft:tiny::theirs", file_id), 404, "model_not_found", "model")
    assert_error(evaluate(client, "ft:tiny::nope", file_id), 404, "model_not_found", "model")
    give_to_another_project(settings, file_id)
    assert_error(evaluate(client, TINY_MODEL, file_id), 404, "not_found", "file")
    assert_error(evaluate(client, TINY_MODEL, "file-nope"), 404, "not_found", "file")


def test_bad_or_too_large_files_are_400_with_line_numbers(client, settings, monkeypatch) -> None:
    bad = upload_examples(client, [chat("a", "b"), {"messages": [{"role": "assistant", "content": "x"}]}])
    error = assert_error(evaluate(client, TINY_MODEL, bad), 400, "invalid_evaluation_file", "file")
    assert "line 2" in error["message"]
    monkeypatch.setattr(evaluations, "MAX_EVALUATION_EXAMPLES", 2)
    large = upload_examples(client, [CHAT_EXAMPLE] * 3)
    error = assert_error(evaluate(client, TINY_MODEL, large), 400, "evaluation_file_too_large", "file")
    assert "more than 2" in error["message"]
    assert_error(
        client.post("/v1/evaluations", json={"model": TINY_MODEL}), 400, "missing_required_parameter", "file"
    )
