"""The compare view and the playground's free choice of models, in headless Chromium: a DiaBlo and a LoRA job
trained through the API, compared on shared axes and in a table; then a checkpoint of one chatting next to the
other model, each answering as the API does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from registry.db import session_scope
from registry.jobs import add_event
from registry.settings import Settings
from tests.dashboard.conftest import TINY_MODEL, Service
from tests.dashboard.test_dashboard_browser import JOB_TIMEOUT_S, api_client, sign_in
from tests.worker.conftest import chat_example, jsonl

pytestmark = [pytest.mark.slow, pytest.mark.integration]
# 24 examples, batch 4, 2 epochs: 12 steps; validation every 4 steps, a checkpoint every 4 and at epoch ends.
SHARED = {"n_epochs": 2, "batch_size": 4, "eval_every": 4, "checkpoint_every": 4, "learning_rate": 1e-2}
METHODS = {"diablo": SHARED | {"num_blocks": 4}, "lora": SHARED | {"rank": 4, "alpha": 8}}
# Evaluation scores as the worker records them where a job has an evaluation file.
EVALUATIONS = [{"step": 8, "eval_exact_match": 0.25, "eval_contains": 0.5},
               {"step": 12, "eval_exact_match": 0.5, "eval_contains": 0.75}]  # fmt: skip


def upload(client: httpx.Client, name: str, count: int) -> str:
    files = {"file": (name, jsonl([chat_example(i) for i in range(count)]), "application/jsonl")}
    return client.post("/v1/files", files=files, data={"purpose": "fine-tune"}).json()["id"]


def train_both(service: Service) -> dict[str, dict[str, Any]]:
    """A DiaBlo and a LoRA job on the same files, trained to the end; returns them by method."""
    with api_client(service) as client:
        training, validation = upload(client, "train.jsonl", 24), upload(client, "valid.jsonl", 6)
        jobs = {}
        for kind, hyperparameters in METHODS.items():
            method = {"type": kind, kind: {"hyperparameters": hyperparameters}}
            body = {"model": TINY_MODEL, "training_file": training, "validation_file": validation,
                    "method": method, "suffix": kind}  # fmt: skip
            jobs[kind] = client.post("/v1/fine_tuning/jobs", json=body).json()
        deadline = time.monotonic() + 2 * JOB_TIMEOUT_S
        for kind, job in jobs.items():
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline, f"job still {job['status']}\n{service.output()}"
                time.sleep(0.5)
                job = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
            assert job["status"] == "succeeded", service.output()
            jobs[kind] = job
    return jobs


def record_evaluations(service: Service, job_id: str) -> None:
    with session_scope(Settings(data_dir=service.data_dir).database_url) as session:
        for data in EVALUATIONS:
            add_event(session, job_id, "info", f"Step {data['step']}: evaluation", type="metrics", data=data)


def facts(service: Service, job: dict[str, Any]) -> dict[str, Any]:
    """What the table should show of ``job``, read from the API: size, speed, checkpoint names."""
    with api_client(service) as client:
        events = client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
        listed = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints", params={"limit": 100}).json()
    sized = [e["data"]["trainable_parameters"] for e in events if "trainable_parameters" in (e["data"] or {})]
    speeds = [e["data"]["tokens_per_second"] for e in events if "tokens_per_second" in (e["data"] or {})]
    checkpoints = [c["fine_tuned_model_checkpoint"] for c in listed["data"]]
    return {"parameters": sized[0], "speed": round(speeds[0]), "checkpoints": checkpoints}  # newest first


def row_cells(page: Page, row: str) -> list[str]:
    return page.locator(f"#compare-table tr[data-row='{row}'] td").all_inner_texts()


def curve_lengths(page: Page, chart: str) -> dict[str, int]:
    curves = page.locator(f"#{chart} polyline")
    return {
        curves.nth(i).get_attribute("data-series") or "": len(
            (curves.nth(i).get_attribute("points") or "").split()
        )
        for i in range(curves.count())
    }


def check_comparison(page: Page, jobs: dict[str, dict[str, Any]], known: dict[str, dict[str, Any]]) -> None:
    # Newest first, as the jobs list: the LoRA job (created second) is column 0.
    order = ["lora", "diablo"]
    heads = page.locator("#compare-table thead th[data-job-id]")
    assert [heads.nth(i).get_attribute("data-job-id") for i in range(2)] == [jobs[k]["id"] for k in order]
    assert row_cells(page, "method") == order
    assert row_cells(page, "adapter") == ["rank 4, alpha 8", "N = 4"]
    assert row_cells(page, "parameters") == [f"{known[k]['parameters']:,}" for k in order]
    assert known["lora"]["parameters"] != known["diablo"]["parameters"]
    assert row_cells(page, "tokens") == [f"{jobs[k]['trained_tokens']:,}" for k in order]
    assert row_cells(page, "speed") == [f"{known[k]['speed']:,}" for k in order]
    times = [jobs[k]["finished_at"] - jobs[k]["started_at"] for k in order]
    assert row_cells(page, "time") == [f"{seconds} s" for seconds in times]
    assert all(
        cell.startswith("2 epochs · batch 4 · LR 1.0e-2") for cell in row_cells(page, "hyperparameters")
    )
    # Both jobs' training and validation losses on one chart; each evaluation metric on its own. Validation
    # runs at steps 4, 8 and 12, and at the checkpoint of the first epoch's end (step 6).
    assert curve_lengths(page, "compare-loss") == {"train-0": 12, "valid-0": 4, "train-1": 12, "valid-1": 4}
    accuracy = curve_lengths(page, "compare-valid_mean_token_accuracy")
    assert accuracy == {"valid_mean_token_accuracy-0": 4, "valid_mean_token_accuracy-1": 4}
    assert page.locator("#compare-eval_exact_match").count() == 0  # no job has evaluation scores yet


def check_evaluations(page: Page) -> None:
    """The LoRA job's evaluation scores: a chart per metric, the last value in the table."""
    expect(page.locator("#compare-eval_exact_match polyline")).to_have_count(1)
    assert curve_lengths(page, "compare-eval_exact_match") == {"eval_exact_match-0": 2}
    assert curve_lengths(page, "compare-eval_contains") == {"eval_contains-0": 2}
    assert row_cells(page, "eval_exact_match") == ["0.5000", "—"]
    assert row_cells(page, "eval_contains") == ["0.7500", "—"]


def chat_with_any_two(page: Page, service: Service, checkpoint: str, model: str) -> None:
    """A DiaBlo checkpoint (A) and the LoRA model (B) answer one prompt; each as the API answers alone."""
    options = page.locator("#model-a optgroup[label='Checkpoints'] option")
    expect(options).not_to_have_count(0)
    assert checkpoint in [options.nth(i).get_attribute("value") for i in range(options.count())]
    page.select_option("#model-a", checkpoint)
    page.select_option("#model-b", model)
    page.fill("input[name=max_tokens]", "16")
    page.fill("#prompt", "Colour 2?")
    page.click("#send-prompt")
    for side in ("a", "b"):
        expect(page.locator(f"#answer-{side}[data-done]")).to_be_visible(timeout=60_000)
    shown = {checkpoint: page.inner_text("#answer-a"), model: page.inner_text("#answer-b")}
    with api_client(service) as client:
        for name, text in shown.items():
            body = {"model": name, "messages": [{"role": "user", "content": "Colour 2?"}], "max_tokens": 16,
                    "temperature": 0}  # fmt: skip
            answer = client.post("/v1/chat/completions", json=body, timeout=60).json()
            assert answer["choices"][0]["message"]["content"] == text, name


def test_compare_two_methods_then_chat_with_a_checkpoint(
    page: Page, service: Service, screenshots: Path
) -> None:
    jobs = train_both(service)
    known = {kind: facts(service, job) for kind, job in jobs.items()}
    sign_in(page, service, "#/compare")
    expect(page.locator("nav a.active")).to_have_text("Compare")
    expect(page.locator("#compare-hint")).to_be_visible()
    for kind in ("diablo", "lora"):
        page.check(f"#compare-picker tr[data-job-id='{jobs[kind]['id']}'] input.compare-pick")
    expect(page.locator("#compare-table")).to_be_visible()
    assert page.evaluate("location.hash") == f"#/compare?jobs={jobs['lora']['id']},{jobs['diablo']['id']}"
    check_comparison(page, jobs, known)
    page.screenshot(path=screenshots / "compare.png", full_page=True)

    record_evaluations(service, jobs["lora"]["id"])
    page.reload()  # the link keeps the choice
    expect(page.locator("#compare-table thead th[data-job-id]")).to_have_count(2)
    check_evaluations(page)
    page.uncheck(f"#compare-picker tr[data-job-id='{jobs['diablo']['id']}'] input.compare-pick")
    expect(page.locator("#compare-hint")).to_be_visible()
    assert page.evaluate("location.hash") == f"#/compare?jobs={jobs['lora']['id']}"

    page.check(f"#compare-picker tr[data-job-id='{jobs['diablo']['id']}'] input.compare-pick")
    page.click("#compare-chat")
    expect(page.locator("#model-a")).to_have_value(jobs["lora"]["fine_tuned_model"])
    expect(page.locator("#model-b")).to_have_value(jobs["diablo"]["fine_tuned_model"])
    checkpoint = known["diablo"]["checkpoints"][-1]  # the oldest: step 4
    chat_with_any_two(page, service, checkpoint, jobs["lora"]["fine_tuned_model"])
