"""The official ``openai`` client against a real uvicorn server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from api.main import create_app
from registry.base_models import DEFAULT_MODEL_ID
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, jsonl, make_settings, served

pytestmark = pytest.mark.integration


@pytest.fixture
def server_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path / "data", sqlite_url)


@pytest.fixture
def base_url(server_settings: Settings) -> Iterator[str]:
    """Serve the app with uvicorn in a thread; yields its ``/v1`` URL."""
    with served(create_app(server_settings)) as url:
        yield f"{url}/v1"


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=30) as sdk:
        yield sdk


def test_files_and_jobs_through_the_sdk(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("train.jsonl", jsonl([CHAT_EXAMPLE] * 4)), purpose="fine-tune")
    assert uploaded.id.startswith("file-")
    assert (uploaded.purpose, uploaded.status) == ("fine-tune", "processed")
    job = client.fine_tuning.jobs.create(
        model="default",
        training_file=uploaded.id,
        suffix="sdk",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    assert (job.status, job.model, job.training_file) == ("queued", DEFAULT_MODEL_ID, uploaded.id)
    assert job.hyperparameters.n_epochs == 2
    assert job.method.type == "diablo"
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    assert [j.id for j in client.fine_tuning.jobs.list(limit=10)] == [job.id]
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    messages = [event.message for event in client.fine_tuning.jobs.list_events(job.id)]
    assert messages[0] == "The job was cancelled"
    assert messages[-1].startswith("Created fine-tuning job")


def test_models_and_errors_through_the_sdk(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [DEFAULT_MODEL_ID]
    assert client.models.retrieve(DEFAULT_MODEL_ID).owned_by == "system"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("ft:nope:x:y")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-x")
    assert (bad.value.code, bad.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.BadRequestError) as invalid:
        client.files.create(file=("bad.jsonl", b'{"messages": []}\n'), purpose="fine-tune")
    assert invalid.value.code == "invalid_file"
    assert invalid.value.body["problems"][0]["line"] == 1
