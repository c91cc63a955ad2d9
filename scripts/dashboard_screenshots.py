"""Screenshots of the dashboard on a running service, after the README's arithmetic run (docs/screenshots).

Drives Debian's Chromium through Playwright (as tests/dashboard does) against a service that has finished
the README's job: the jobs list, that job, the new-job page (the job's training file chosen, the estimate
measured on the finished job, and a broken upload's problems with their line numbers), the Models page, and
the playground asking the fine-tuned model and its base model the README's question side by side::

    .venv/bin/python scripts/dashboard_screenshots.py --base-url http://127.0.0.1:8123 --job ftjob-... \
        --out docs/screenshots

It creates nothing on the service: the broken upload is refused, and chat requests leave no record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]
VIEWPORT = {"width": 1280, "height": 860}
SYSTEM = "Reply with the number only."
QUESTION = "What is 233 + 996?"
# A training file with three problems (lines 2 to 4), to show the checks on upload.
BROKEN_LINES = [
    json.dumps(
        {"messages": [{"role": "user", "content": "What is 1 + 2?"}, {"role": "assistant", "content": "3"}]}
    ),
    '{"messages": [{"role": "user", "content": "What is 2 + 2?"}',
    json.dumps({"messages": [{"role": "user", "content": "What is 3 + 4?"}]}),
    json.dumps({"messages": [{"content": "What is 5 + 6?"}, {"role": "assistant", "content": "11"}]}),
]


def sign_in(page: Page, base_url: str, api_key: str, hash_path: str) -> None:
    """Open ``hash_path`` and enter the key in the top bar (kept in local storage for the next pages)."""
    page.goto(f"{base_url}/{hash_path}")
    page.fill("#api-key", api_key)
    page.press("#api-key", "Enter")
    expect(page.locator("#notice")).to_be_hidden()


def shoot_jobs(page: Page, base_url: str, job_id: str, out: Path) -> None:
    page.goto(f"{base_url}/#/jobs")
    expect(page.locator(f"tr.job-row[data-job-id='{job_id}'] .badge")).to_have_attribute(
        "data-status", "succeeded"
    )
    page.screenshot(path=out / "jobs.png", full_page=True)


def shoot_job(page: Page, base_url: str, job_id: str, out: Path) -> None:
    page.goto(f"{base_url}/#/jobs/{job_id}")
    expect(page.locator("#loss-chart polyline.curve-train")).to_be_visible()
    expect(page.locator("#events .event")).not_to_have_count(0)
    page.wait_for_timeout(1500)  # one more refresh, so that every series is drawn
    page.screenshot(path=out / "job.png", full_page=True)


def shoot_new_job(page: Page, base_url: str, job: dict[str, Any], out: Path) -> None:
    page.goto(f"{base_url}/#/new")
    page.select_option("#training-select", job["training_file"])
    page.fill("#suffix", "arith")
    page.set_input_files(
        "#training-upload",
        files=[
            {
                "name": "broken.jsonl",
                "mimeType": "application/jsonl",
                "buffer": "\n".join(BROKEN_LINES).encode(),
            }
        ],
    )
    expect(page.locator("#training-result .problem")).to_have_count(3)
    page.wait_for_timeout(1500)  # the estimate of the chosen file
    page.screenshot(path=out / "new-job.png", full_page=True)


def shoot_models(page: Page, base_url: str, model: str, out: Path) -> None:
    page.goto(f"{base_url}/#/models")
    expect(page.locator(f"tr.model-row[data-model='{model}']")).to_be_visible()
    page.screenshot(path=out / "models.png", full_page=True)


def shoot_playground(page: Page, base_url: str, model: str, out: Path) -> dict[str, str]:
    """The README's question to the fine-tuned model (B) and its base model (A); returns both answers."""
    page.goto(f"{base_url}/#/playground?model={model}")
    expect(page.locator("#model-b")).to_have_value(model)
    page.fill("input[name='system']", SYSTEM)
    page.fill("#prompt", QUESTION)
    page.click("#send-prompt")
    for side in ("a", "b"):
        expect(page.locator(f"#answer-{side}[data-done]")).to_be_visible(timeout=300_000)
    page.screenshot(path=out / "playground.png", full_page=True)
    return {side: page.inner_text(f"#answer-{side}") for side in ("a", "b")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("DIABLO_BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("DIABLO_API_KEY"))
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="where `diablo serve` saved its key"
    )
    parser.add_argument("--job", required=True, help="the finished job of the README's arithmetic run")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    api_key = args.api_key or (args.data_dir / "dev-api-key").read_text().strip()
    with httpx.Client(base_url=args.base_url, headers={"Authorization": f"Bearer {api_key}"}) as client:
        job = client.get(f"/v1/fine_tuning/jobs/{args.job}").raise_for_status().json()
    if job["status"] != "succeeded":
        sys.exit(f"job {args.job} is {job['status']}, not succeeded")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        expect.set_options(timeout=60_000)
        sign_in(page, args.base_url, api_key, "#/jobs")
        shoot_jobs(page, args.base_url, args.job, args.out)
        shoot_job(page, args.base_url, args.job, args.out)
        shoot_new_job(page, args.base_url, job, args.out)
        shoot_models(page, args.base_url, job["fine_tuned_model"], args.out)
        answers = shoot_playground(page, args.base_url, job["fine_tuned_model"], args.out)
        browser.close()
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
