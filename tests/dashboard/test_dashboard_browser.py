"""The dashboard end to end in headless Chromium: upload, start a job, watch its curve grow, chat with it."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.dashboard.conftest import TINY_MODEL, Service
from tests.worker.conftest import chat_example, jsonl

pytestmark = [pytest.mark.slow, pytest.mark.integration]
JOB_TIMEOUT_S = 240.0
# How long a job is held mid-run: well within the 30 s that the worker waits for the registry's write lock.
HOLD_S = 15.0
# 48 training examples, batch size 2, 8 epochs: long enough (a few seconds) to watch, at most 200 steps
# so that every step has its metrics event.
TOTAL_STEPS = 192
BAD_LINES = [
    json.dumps(chat_example(0)),
    "this is not json",
    json.dumps({"messages": [{"role": "user", "content": "Colour 1?"}]}),
    json.dumps({"messages": [{"content": "Colour 2?"}, {"role": "assistant", "content": "It is red."}]}),
]


def sign_in(page: Page, service: Service, hash_path: str) -> None:
    """Open the dashboard at ``hash_path``, refused without a key, then enter the key in the top bar."""
    page.goto(f"{service.base_url}/{hash_path}")
    expect(page.locator("#notice")).to_contain_text("Missing bearer authentication")
    page.fill("#api-key", service.api_key)
    page.press("#api-key", "Enter")
    expect(page.locator("#notice")).to_be_hidden()


def api_client(service: Service) -> httpx.Client:
    return httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {service.api_key}"})


def upload(page: Page, name: str, filename: str, content: bytes) -> None:
    page.set_input_files(f"#{name}-upload", files=[{"name": filename, "mimeType": "application/jsonl",
                                                     "buffer": content}])  # fmt: skip


def curve_points(page: Page, series: str) -> int:
    """How many points the loss curve ``series`` ("train" or "valid") has now (0 while it is not drawn)."""
    curve = page.locator(f"#loss-chart polyline.curve-{series}")
    if curve.count() == 0:
        return 0
    return len((curve.get_attribute("points") or "").split())


def job_status(page: Page) -> str:
    badge = page.locator(".page-head .badge")
    return badge.get_attribute("data-status") if badge.count() else ""


@contextmanager
def held_mid_run(service: Service, job_id: str) -> Iterator[int]:
    """Hold the job while it runs with part of its steps done; yields how many steps it has recorded.

    The test takes the SQLite registry's write lock once the job has recorded a step and is still running,
    and keeps it for the block: the job cannot record more steps nor finish (the worker waits for the lock),
    while the API goes on reading it. So the page is certain to see it mid-run, however fast it trains.
    """
    with api_client(service) as client:  # the key is verified (and its use recorded) now, not while held
        assert client.get("/v1/models").status_code == 200
    database = sqlite3.connect(service.data_dir / "registry.db", timeout=30, isolation_level=None)
    steps = (
        "SELECT count(*) FROM job_events WHERE job_id = ? AND json_extract(data, '$.train_loss') IS NOT NULL"
    )
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            database.execute("BEGIN IMMEDIATE")
            [status] = database.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            [done] = database.execute(steps, (job_id,)).fetchone()
            if status == "running" and 0 < done < TOTAL_STEPS:
                break
            database.execute("ROLLBACK")
            assert status in ("queued", "running"), f"job {status} at step {done} before it was held"
            assert time.monotonic() < deadline, f"job still {status} at step {done}\n{service.output()}"
            time.sleep(0.02)
        yield done
    finally:
        if database.in_transaction:
            database.execute("ROLLBACK")
        database.close()


def part_drawn_curve(page: Page) -> int:
    """Wait until the page draws a training curve of some but not all steps; return its point count."""
    deadline = time.monotonic() + HOLD_S
    while not 0 < (count := curve_points(page, "train")) < TOTAL_STEPS:
        assert time.monotonic() < deadline, f"the curve has {count} points after {HOLD_S} s"
        page.wait_for_timeout(100)
    return count


def watch_curve(page: Page, service: Service) -> list[int]:
    """The training curve's point counts seen, in order, until the job has ended; returns them."""
    seen: list[int] = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while job_status(page) not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job_status(page)}\n{service.output()}"
        count = curve_points(page, "train")
        if not seen or count != seen[-1]:
            seen.append(count)
        page.wait_for_timeout(200)
    return seen


def show_bad_dataset(page: Page, service: Service, screenshots: Path) -> None:
    sign_in(page, service, "#/new")
    upload(page, "training", "broken.jsonl", ("\n".join(BAD_LINES) + "\n").encode())
    problems = page.locator("#training-result .problem")
    expect(problems).to_have_count(3)
    assert [problems.nth(i).get_attribute("data-line") for i in range(3)] == ["2", "3", "4"]
    expect(problems.nth(0)).to_contain_text("not valid JSON")
    expect(problems.nth(1)).to_contain_text("no assistant message")
    expect(problems.nth(2)).to_contain_text("'role' is missing")
    page.screenshot(path=screenshots / "new-job.png", full_page=True)


def start_job(page: Page) -> str:
    """Upload valid training and validation files, fill in the form, start; returns the job id."""
    upload(page, "training", "colours.jsonl", jsonl([chat_example(i) for i in range(48)]))
    expect(page.locator("#training-result .ok-text")).to_contain_text("colours.jsonl is valid")
    upload(page, "validation", "colours-valid.jsonl", jsonl([chat_example(i) for i in range(8)]))
    expect(page.locator("#validation-result .ok-text")).to_be_visible()
    assert page.input_value("#training-select").startswith("file-")
    page.select_option("#model", TINY_MODEL)
    fields = {"#suffix": "colours", "#n_epochs": "8", "#batch_size": "2", "#learning_rate_multiplier": "40"}
    for selector, value in (fields | {"#num_blocks": "4", "#eval_every": "32"}).items():
        page.fill(selector, value)
    # Before the start: the dry run's estimate, with max_length "auto" counted by the API's tokenizer; an
    # explicit max_length that an example exceeds is named with its line, and nothing is created.
    estimate = page.locator("#job-estimate")
    expect(estimate).to_contain_text(re.compile(r"≈ 192 steps · .* · max length \d+ tokens"))
    page.fill("#max_length", "8")
    page.locator("#max_length").dispatch_event("change")
    expect(estimate).to_contain_text("line 1: example has")
    expect(estimate).to_contain_text("example_too_long")
    page.fill("#max_length", "")
    page.locator("#max_length").dispatch_event("change")
    expect(estimate).to_contain_text("max length")
    page.click("#start-job")
    page.wait_for_url("**/#/jobs/ftjob-*")
    return page.url.rsplit("/", 1)[-1]


def check_finished_job(page: Page) -> None:
    assert curve_points(page, "train") == TOTAL_STEPS
    # Validation every 32 steps (the last at the end); checkpoints every 25 steps and at the end.
    assert curve_points(page, "valid") >= 6
    expect(page.locator("#events .event")).not_to_have_count(0)
    expect(page.locator("#events")).to_contain_text("New fine-tuned model created")
    steps = page.locator("#checkpoints-table .checkpoint-row td:first-child").all_inner_texts()
    assert set(steps) >= {"25", "50", "75"}
    expect(page.locator("#cancel-job")).to_be_disabled()


def check_jobs_list(page: Page, service: Service, job_id: str, screenshots: Path) -> None:
    page.goto(f"{service.base_url}/#/jobs")
    row = page.locator(f"tr.job-row[data-job-id='{job_id}']")
    expect(row.locator(".badge")).to_have_attribute("data-status", "succeeded")
    expect(row).to_contain_text(TINY_MODEL)
    page.screenshot(path=screenshots / "jobs.png", full_page=True)
    row.click()
    page.wait_for_url(f"**/#/jobs/{job_id}")


def chat_side_by_side(page: Page, job: dict[str, Any], screenshots: Path) -> None:
    """From the job page to the playground: one prompt, answers from the base and the fine-tuned model."""
    page.click(".summary a[href^='#/playground']")
    expect(page.locator("#model-b")).to_have_value(job["fine_tuned_model"])
    expect(page.locator("#model-a")).to_have_value(TINY_MODEL)
    page.fill("#prompt", "Colour 1?")
    page.click("#send-prompt")
    for side in ("a", "b"):
        expect(page.locator(f"#answer-{side}[data-done]")).to_be_visible(timeout=60_000)
    tuned, base = page.inner_text("#answer-b"), page.inner_text("#answer-a")
    assert "It is" in tuned and tuned != base, (tuned, base)
    page.screenshot(path=screenshots / "playground.png", full_page=True)


def test_upload_train_watch_and_chat(page: Page, service: Service, screenshots: Path) -> None:
    show_bad_dataset(page, service, screenshots)
    job_id = start_job(page)
    # The curve is drawn while the job runs, not only once at the end. The tiny job can finish within one of
    # the page's 1 s refreshes, so it is held mid-run until the page has drawn the steps it recorded.
    with held_mid_run(service, job_id) as done:
        mid_run = part_drawn_curve(page)
    assert mid_run <= done
    counts = [mid_run, *watch_curve(page, service)]
    with api_client(service) as client:
        job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "succeeded", service.output()
    assert counts == sorted(counts), counts
    page.wait_for_timeout(1500)  # one more refresh after the final status
    check_finished_job(page)
    page.screenshot(path=screenshots / "job.png", full_page=True)
    check_jobs_list(page, service, job_id, screenshots)
    chat_side_by_side(page, job, screenshots)


def test_cancel_button_cancels_a_job(page: Page, service: Service) -> None:
    client = api_client(service)
    files = {"file": ("long.jsonl", jsonl([chat_example(i) for i in range(64)]), "application/jsonl")}
    training_file = client.post("/v1/files", files=files, data={"purpose": "fine-tune"}).json()["id"]
    long_run = {"n_epochs": 50, "batch_size": 1, "num_blocks": 4}
    method = {"type": "diablo", "diablo": {"hyperparameters": long_run}}
    body = {"model": TINY_MODEL, "training_file": training_file, "method": method}
    job_id = client.post("/v1/fine_tuning/jobs", json=body).json()["id"]
    sign_in(page, service, f"#/jobs/{job_id}")
    expect(page.locator("#cancel-job")).to_be_enabled()
    page.click("#cancel-job")
    badge = page.locator(".page-head .badge")
    expect(badge).to_have_attribute("data-status", "cancelled", timeout=60_000)
    expect(page.locator("#cancel-job")).to_be_disabled()
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "cancelled"
    client.close()
