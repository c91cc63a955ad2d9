"""#17's job fields through the official ``openai`` client: metadata filters, integrations, dry runs and
max_length."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from api.main import create_app
from registry.api_keys import create_api_key
from registry.db import session_scope
from registry.result_files import add_results_file
from registry.settings import Settings
from tests.api.conftest import CHAT_EXAMPLE, jsonl, make_settings, served
from tests.core.tiny_tokenizer import make_tiny_tokenizer

pytestmark = pytest.mark.integration
WANDB = {"type": "wandb", "wandb": {"project": "diablo", "entity": "team", "name": "run", "tags": ["a", "b"]}}


@pytest.fixture
def client(tmp_path: Path, database_url: str) -> Iterator[openai.OpenAI]:
    settings: Settings = make_settings(tmp_path / "data", database_url)
    with (
        served(create_app(settings)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0, timeout=30) as sdk,
    ):
        yield sdk


@pytest.fixture
def training_file(client: openai.OpenAI) -> str:
    return client.files.create(file=("t.jsonl", jsonl([CHAT_EXAMPLE] * 4)), purpose="fine-tune").id


def test_jobs_are_filtered_by_metadata(client: openai.OpenAI, training_file: str) -> None:
    nlp = client.fine_tuning.jobs.create(
        model="default", training_file=training_file, metadata={"team": "nlp", "run": "1"}
    )
    create = client.fine_tuning.jobs.create
    vision = create(model="default", training_file=training_file, metadata={"team": "cv"})
    bare = create(model="default", training_file=training_file)
    assert nlp.metadata == {"team": "nlp", "run": "1"}
    listed = client.fine_tuning.jobs.list
    assert [job.id for job in listed(metadata={"team": "nlp"})] == [nlp.id]
    assert [job.id for job in listed(metadata={"team": "nlp", "run": "1"})] == [nlp.id]
    assert [job.id for job in listed(metadata={"team": "cv"})] == [vision.id]
    assert list(listed(metadata={"team": "nlp", "run": "2"})) == []
    assert [job.id for job in listed()] == [bare.id, vision.id, nlp.id]
    with pytest.raises(openai.BadRequestError) as long_key:
        listed(metadata={"k" * 65: "v"})
    assert (long_key.value.code, long_key.value.param) == ("invalid_metadata", "metadata")


@pytest.mark.parametrize(
    ("metadata", "param"),
    [
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
        ({"k" * 65: "v"}, "metadata"),
        ({"k": "v" * 513}, "metadata"),
        ({"k": 1}, "metadata.k"),
    ],
)
def test_metadata_follows_openai_limits(
    client: openai.OpenAI, training_file: str, metadata: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="default", training_file=training_file, metadata=metadata)  # type: ignore[arg-type]
    assert (refused.value.param, refused.value.type) == (param, "invalid_request_error")


def test_wandb_integration_is_stored_and_echoed(client: openai.OpenAI, training_file: str) -> None:
    job = client.fine_tuning.jobs.create(
        model="default",
        training_file=training_file,
        integrations=[WANDB],  # type: ignore[list-item]
    )
    assert job.integrations is not None
    assert job.integrations[0].type == "wandb"
    assert job.integrations[0].wandb.project == "diablo"
    assert job.integrations[0].wandb.tags == ["a", "b"]


@pytest.mark.parametrize(
    ("integration", "param"),
    [
        ({"type": "comet", "comet": {"project": "p"}}, "integrations.0.type"),
        ({"type": "wandb"}, "integrations.0.wandb"),
        ({"type": "wandb", "wandb": {"entity": "e"}}, "integrations.0.wandb.project"),
        ({"type": "wandb", "wandb": {"project": "p", "group": "g"}}, "integrations.0.wandb.group"),
    ],
)
def test_unknown_integrations_are_refused(
    client: openai.OpenAI, training_file: str, integration: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(
            model="default",
            training_file=training_file,
            integrations=[integration],  # type: ignore[list-item]
        )
    assert (refused.value.param, refused.value.type) == (param, "invalid_request_error")
    assert list(client.fine_tuning.jobs.list()) == []


def test_a_results_file_downloads_only_in_its_project(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url, auth="on")
    history = [
        {"step": 1, "loss": 2.5, "accuracy": 0.25},
        {"step": 1, "eval_loss": 3.0, "eval_accuracy": 0.5},
    ]
    with served(create_app(settings)) as url:
        with session_scope(settings.database_url) as session:
            keys = {project: create_api_key(session, project)[1] for project in ("alpha", "beta")}
            file_id = add_results_file(session, settings, "alpha", history).id
        alpha = openai.OpenAI(base_url=f"{url}/v1", api_key=keys["alpha"], max_retries=0, timeout=30)
        beta = openai.OpenAI(base_url=f"{url}/v1", api_key=keys["beta"], max_retries=0, timeout=30)
        with alpha, beta:
            listed = alpha.files.list(purpose="fine-tune-results")
            assert [(f.id, f.filename) for f in listed] == [(file_id, "step_metrics.csv")]
            assert alpha.files.content(file_id).text.splitlines()[1] == "1,2.5,0.25,3,0.5,3,0.5"
            with pytest.raises(openai.NotFoundError):
                beta.files.content(file_id)
            assert list(beta.files.list(purpose="fine-tune-results")) == []


def test_a_dry_run_through_extra_body_creates_nothing(tmp_path: Path, database_url: str) -> None:
    settings: Settings = make_settings(tmp_path / "data", database_url)
    directory = settings.data_dir / "models" / "tiny-chat"
    make_tiny_tokenizer().save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    with (
        served(create_app(settings)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", max_retries=0, timeout=30) as sdk,
    ):
        training = sdk.files.create(file=("t.jsonl", jsonl([CHAT_EXAMPLE] * 4)), purpose="fine-tune").id
        create = sdk.fine_tuning.jobs.create
        answer = create(model="tiny-chat", training_file=training, extra_body={"dry_run": True}).to_dict()
        assert answer["object"] == "fine_tuning.job.estimate" and answer["total_steps"] > 0
        assert answer["method"]["diablo"]["hyperparameters"]["max_length"] > 0  # "auto", counted
        assert list(sdk.fine_tuning.jobs.list()) == []
        tight = {"type": "diablo", "diablo": {"hyperparameters": {"max_length": 8}}}
        with pytest.raises(openai.BadRequestError) as refused:
            create(model="tiny-chat", training_file=training, method=tight)  # type: ignore[arg-type]
        assert (refused.value.code, refused.value.param) == ("example_too_long", "training_file")
        assert list(sdk.fine_tuning.jobs.list()) == []
