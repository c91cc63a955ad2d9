"""A LoRA job and a DiaBlo job on the same data through the API and a real worker; then both models and the
base served together under concurrent chat requests, each answering exactly as it does alone (greedy)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.client import TINY_MODEL, ServiceClient
from tests.e2e.conftest import Service, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]
JOB_TIMEOUT_S = 240.0
SHARED = {"max_steps": 8, "learning_rate": 1e-2, "batch_size": 8, "warmup_steps": 0, "dropout": 0.0}
RUNS = {"diablo": SHARED | {"num_blocks": 4}, "lora": SHARED | {"rank": 4, "alpha": 8}}
PROMPTS = ["What is 3 + 4?", "What is 9 + 0?", "Say something.", "What is 5 + 5?"]


@pytest.fixture
def serving_service(service_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    """The API serving the tiny model (fp32, so that no row depends on its batch's rounding), one worker."""
    env = service_env | {"DIABLO_DEFAULT_MODEL": TINY_MODEL, "DIABLO_INFERENCE_DTYPE": "fp32"}
    with running_service(env, tmp_path) as running:
        yield running


def trainable_parameters(events: list[dict[str, Any]]) -> int:
    """The adapter's size, as the job's events record it once its method is applied."""
    (count,) = [
        e["data"]["trainable_parameters"] for e in events if "trainable_parameters" in (e["data"] or {})
    ]
    return count


def answer(client: ServiceClient, model: str, prompt: str) -> str:
    messages = [
        {"role": "system", "content": "Reply with the number only."},
        {"role": "user", "content": prompt},
    ]
    body = {"model": model, "messages": messages, "max_tokens": 12, "temperature": 0}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == model
    return response.json()["choices"][0]["message"]["content"]


def test_lora_and_diablo_jobs_train_and_serve_together(serving_service: Service) -> None:
    with serving_service.client() as client:
        file_id = client.upload_examples(32)
        created = {kind: client.create_job(file_id, method_type=kind, **run) for kind, run in RUNS.items()}
        jobs = {kind: client.wait_for_job(job["id"], JOB_TIMEOUT_S) for kind, job in created.items()}
        for kind, job in jobs.items():
            assert (job["status"], job["error"]) == ("succeeded", None), f"{kind}\n{serving_service.output()}"
            assert job["method"]["type"] == kind and job["trained_tokens"] > 0
        sizes = {kind: trainable_parameters(client.events(job["id"])) for kind, job in jobs.items()}
        listed = {model["id"] for model in client.get("/v1/models").json()["data"]}
        models = [TINY_MODEL, jobs["diablo"]["fine_tuned_model"], jobs["lora"]["fine_tuned_model"]]
        assert set(models) <= listed
        alone = {(model, prompt): answer(client, model, prompt) for model in models for prompt in PROMPTS}
        asks = [
            pair for pair in alone for _ in range(2)
        ]  # 24 requests at once: rows of all three share batches
        with ThreadPoolExecutor(len(asks)) as pool:
            together = list(pool.map(lambda pair: answer(client, *pair), asks))
    lora, diablo = (jobs[kind]["method"][kind]["hyperparameters"] for kind in ("lora", "diablo"))
    assert (lora["rank"], lora["alpha"], diablo["num_blocks"]) == (4, 8, 4)
    assert sizes["lora"] != sizes["diablo"] and min(sizes.values()) > 0, sizes
    assert together == [alone[pair] for pair in asks]
    by_model = [[alone[(model, prompt)] for prompt in PROMPTS] for model in models]
    assert len({tuple(answers) for answers in by_model}) == 3, by_model  # three different models answered
