"""The steps of the end-to-end tests, taken over HTTP with httpx as any client would take them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

TINY_MODEL = "tiny-llama"
TERMINAL = ("succeeded", "failed", "cancelled")


def arithmetic_examples(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` chat examples "What is A + B?" -> "C" with one-digit numbers (a toy task that is learned
    within a few steps)."""
    pairs = [(a, b) for a in range(10) for b in range(10)]
    chosen = [pairs[(seed + 37 * index) % len(pairs)] for index in range(count)]
    return [
        {
            "messages": [
                {"role": "system", "content": "Reply with the number only."},
                {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": str(a + b)},
            ]
        }
        for a, b in chosen
    ]


def jsonl(examples: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(example) + "\n" for example in examples).encode()


class ServiceClient(httpx.Client):
    """A client of the API sending ``api_key`` as its bearer token; ``logs()`` explains a failed wait."""

    def __init__(self, base_url: str, api_key: str, logs: Callable[[], str]) -> None:
        super().__init__(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
        self.logs = logs

    def upload(self, content: bytes) -> str:
        """Upload a fine-tuning file; return its id."""
        files = {"file": ("train.jsonl", content, "application/jsonl")}
        response = self.post("/v1/files", files=files, data={"purpose": "fine-tune"})
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def upload_examples(self, count: int, seed: int = 0) -> str:
        """Upload ``count`` :func:`arithmetic_examples`; return the file's id."""
        return self.upload(jsonl(arithmetic_examples(count, seed)))

    def create_job(
        self, training_file: str, model: str = TINY_MODEL, method_type: str = "diablo", **hyperparameters: Any
    ) -> dict[str, Any]:
        """Create a job of ``method_type`` (DiaBlo unless told) with the given method hyperparameters; return
        the job object."""
        method = {"type": method_type, method_type: {"hyperparameters": hyperparameters}}
        body = {"model": model, "training_file": training_file, "method": method, "suffix": "e2e", "seed": 3}
        response = self.post("/v1/fine_tuning/jobs", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_job(
        self, job_id: str, timeout_s: float, until: tuple[str, ...] = TERMINAL
    ) -> dict[str, Any]:
        """Poll the job until its status is one of ``until``; fail with the logs on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            if job["status"] in until:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job still {job['status']} after {timeout_s} s: {job}\n{self.logs()}")
            time.sleep(0.2)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """All of a job's events, oldest first."""
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params = {"limit": 100} | ({"after": after} if after else {})
            page = self.get(f"/v1/fine_tuning/jobs/{job_id}/events", params=params).json()
            found.extend(page["data"])
            if not page["has_more"]:
                return list(reversed(found))
            after = page["last_id"]
