"""The real default model, fine-tuned through ``diablo serve`` on the embedded defaults.

Nothing is configured but the data dir: the registry and the broker are SQLite files in it, as after
``make run``. The default model is converted once per session and linked into the fresh data dir.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from registry.base_models import DEFAULT_MODEL_ID
from tests.e2e.client import ServiceClient
from tests.e2e.conftest import new_api_key
from tests.process_helpers import diablo_serve, embedded_env, link_models, wait_until_serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STARTUP_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 600.0
SHORT_RUN = {"max_steps": 5, "batch_size": 4, "warmup_steps": 0, "learning_rate": 1e-3}


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-5000:]


def test_diablo_serve_fine_tunes_the_default_model(tmp_path: Path, converted_models: Path) -> None:
    data_dir = link_models(tmp_path / "data", converted_models)
    log = tmp_path / "serve.log"
    with diablo_serve(embedded_env(data_dir) | {"HF_HUB_OFFLINE": "1"}, log) as (serve, base_url):
        wait_until_serving(log, STARTUP_TIMEOUT_S)
        key = new_api_key(f"sqlite:///{data_dir / 'registry.db'}")
        with ServiceClient(base_url, key, lambda: tail(log)) as client:
            file_id = client.upload_examples(16)
            created = client.create_job(file_id, "default", **SHORT_RUN)
            job = client.wait_for_job(created["id"], JOB_TIMEOUT_S)
            history = client.events(job["id"])
            models = {model["id"]: model for model in client.get("/v1/models").json()["data"]}
        os.killpg(serve.pid, signal.SIGINT)
        assert serve.wait(timeout=60) == 0
    assert (job["status"], job["error"], job["model"]) == ("succeeded", None, DEFAULT_MODEL_ID), tail(log)
    assert [event["data"]["step"] for event in history if event["type"] == "metrics"] == [1, 2, 3, 4, 5]
    adapter = models[job["fine_tuned_model"]]
    assert adapter["base_model"] == DEFAULT_MODEL_ID and adapter["job_id"] == job["id"]
    assert (data_dir / "registry.db").is_file() and (data_dir / "broker.db").is_file()
