"""A job on an NF4 base through the API and a real worker, its model answering chat on an NF4-serving API,
and a second job continuing from it (Postgres + Redis, the tiny model)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.client import TINY_MODEL
from tests.e2e.conftest import Service, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]
JOB_TIMEOUT_S = 240.0
TINY_RUN = {"max_steps": 6, "learning_rate": 1e-2, "batch_size": 8, "num_blocks": 4, "warmup_steps": 0}


@pytest.fixture
def nf4_service(service_env: dict[str, str], tmp_path: Path) -> Iterator[Service]:
    """The API serving the tiny model with NF4 linears, and one worker."""
    env = service_env | {"DIABLO_DEFAULT_MODEL": TINY_MODEL, "DIABLO_INFERENCE_QUANTIZATION": "nf4"}
    with running_service(env, tmp_path) as running:
        yield running


def test_an_nf4_job_answers_chat_and_a_child_continues_from_it(nf4_service: Service) -> None:
    with nf4_service.client() as client:
        file_id = client.upload_examples(16)
        created = client.create_job(file_id, quantization="nf4", precision="fp32", **TINY_RUN)
        assert created["method"]["diablo"]["hyperparameters"]["quantization"] == "nf4"
        job = client.wait_for_job(created["id"], JOB_TIMEOUT_S)
        assert (job["status"], job["error"]) == ("succeeded", None), nf4_service.output()
        messages = [event["message"] for event in client.events(job["id"])]
        body = {"model": job["fine_tuned_model"], "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
        chat = client.post("/v1/chat/completions", json=body | {"max_tokens": 4, "temperature": 0})
        assert chat.status_code == 200, chat.text + nf4_service.output()
        # A merged export of the NF4-trained model: dequantized, merged, written in full precision.
        merged = client.get(f"/v1/models/{job['fine_tuned_model']}/content", params={"format": "merged"})
        assert merged.status_code == 200, merged.text + nf4_service.output()
        with tarfile.open(fileobj=io.BytesIO(merged.content)) as archive:
            names = {Path(name).name for name in archive.getnames()}
        assert {"config.json", "model.safetensors", "README.md"} <= names

        child = client.create_job(file_id, model=job["fine_tuned_model"], max_steps=2, warmup_steps=0)
        assert (child["model"], child["parent_model"]) == (TINY_MODEL, job["fine_tuned_model"])
        assert child["method"]["diablo"]["hyperparameters"]["num_blocks"] == 4  # the parent's
        child = client.wait_for_job(child["id"], JOB_TIMEOUT_S)
        assert child["status"] == "succeeded", nf4_service.output()
        shown = client.get(f"/v1/models/{child['fine_tuned_model']}").json()
    assert "Training in fp32 (as set)" in messages
    assert job["method"]["diablo"]["hyperparameters"]["precision"] == "fp32"
    assert chat.json()["model"] == job["fine_tuned_model"]
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    assert shown["parent"] == job["fine_tuned_model"]
