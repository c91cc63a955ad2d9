"""POST /v1/fine_tuning/jobs: defaults, resolved hyperparameters, and every way a request is refused."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from registry.base_models import DEFAULT_MODEL_ID
from registry.models import File
from registry.settings import Settings
from tests.api.conftest import assert_error, create_job, make_settings, upload, uploaded_file_id

DIABLO_DEFAULTS = {
    "num_blocks": 64,
    "target_modules": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "dropout": 0.05,
    "max_length": "auto",  # this data dir holds no converted default model: the worker counts the files
    "scheduler": "linear",
    "checkpoint_every": 50,
}


def _diablo(**hyperparameters: Any) -> dict[str, Any]:
    return {"method": {"type": "diablo", "diablo": {"hyperparameters": hyperparameters}}}


DIABLO = "method.diablo.hyperparameters"


def test_create_with_defaults(client: TestClient) -> None:
    response = create_job(client, training_file=uploaded_file_id(client, examples=40))
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["id"].startswith("ftjob-")
    assert job["object"] == "fine_tuning.job"
    assert job["model"] == DEFAULT_MODEL_ID
    assert job["status"] == "queued"
    assert job["organization_id"] == "default"
    assert job["error"] is None
    assert job["fine_tuned_model"] is None
    assert job["progress"] is None
    assert isinstance(job["seed"], int)
    # 40 examples: 10 held out for validation; "auto" is up to 2 x 4 epochs of 16 examples (early stopping),
    # the learning rate chosen by the worker once it knows the model.
    assert job["hyperparameters"] == {"n_epochs": 8, "batch_size": 16, "learning_rate_multiplier": 1.0}
    resolved = job["method"]["diablo"]["hyperparameters"]
    assert job["method"]["type"] == "diablo"
    assert {key: resolved[key] for key in DIABLO_DEFAULTS} == DIABLO_DEFAULTS
    assert resolved["learning_rate"] == "auto"
    assert (resolved["validation_holdout"], resolved["early_stopping_patience"]) == (10, 4)
    # 8 epochs x 2 steps = 16 steps, shorter than the 100-step warm-up: a tenth of the run.
    assert resolved["warmup_steps"] == 1
    assert client.get(f"/v1/fine_tuning/jobs/{job['id']}").json() == job


def test_auto_values_follow_the_dataset_size(client: TestClient) -> None:
    job = create_job(client, training_file=uploaded_file_id(client, examples=4)).json()
    # Few examples: enough epochs to see about 100, and a batch no larger than the file.
    assert job["hyperparameters"] == {"n_epochs": 25, "batch_size": 4, "learning_rate_multiplier": 1.0}


def test_create_with_diablo_hyperparameters(client: TestClient) -> None:
    method = _diablo(
        n_epochs=2,
        batch_size=2,
        num_blocks=16,
        target_modules=["q_proj", "v_proj"],
        dropout=0.1,
        learning_rate=1e-3,
        warmup_steps=100,
        max_steps=40,
        max_length=128,
        scheduler="cosine",
        checkpoint_every=0,
    )
    job = create_job(client, **method, suffix="my model!", seed=7, metadata={"team": "nlp"}).json()
    # max_steps replaces n_epochs: 40 steps over 4 examples in batches of 2 run 20 epochs.
    assert job["hyperparameters"] == {"n_epochs": 20, "batch_size": 2, "learning_rate_multiplier": 2.0}
    resolved = job["method"]["diablo"]["hyperparameters"]
    expected = {"num_blocks": 16, "target_modules": ["q_proj", "v_proj"], "dropout": 0.1, "max_steps": 40}
    expected |= {"learning_rate": 1e-3, "warmup_steps": 4, "max_length": 128, "scheduler": "cosine"}
    expected |= {"checkpoint_every": 0}
    assert {key: resolved[key] for key in expected} == expected
    assert (job["suffix"], job["seed"], job["metadata"]) == ("my-model", 7, {"team": "nlp"})


def test_supervised_method_and_top_level_hyperparameters(client: TestClient) -> None:
    body: dict[str, Any] = {"hyperparameters": {"n_epochs": 4, "learning_rate_multiplier": 0.5}}
    body["method"] = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 6}}}
    job = create_job(client, **body).json()
    assert job["hyperparameters"] == {"n_epochs": 6, "batch_size": 4, "learning_rate_multiplier": 0.5}
    assert job["method"]["diablo"]["hyperparameters"]["learning_rate"] == "auto"  # 0.5 x the model's rate


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 2.5}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": "big"}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"learning_rate_multiplier": -1}}, "hyperparameters.learning_rate_multiplier"),
        (_diablo(num_blocks=0), f"{DIABLO}.num_blocks"),
        (_diablo(dropout=1.5), f"{DIABLO}.dropout"),
        (_diablo(colour="red"), f"{DIABLO}.colour"),
        (_diablo(target_modules=["a.b"]), f"{DIABLO}.target_modules"),
        (_diablo(scheduler="step"), f"{DIABLO}.scheduler"),
        (_diablo(precision="fp8"), f"{DIABLO}.precision"),
        (_diablo(quantization="q4"), f"{DIABLO}.quantization"),
        ({"method": {"type": "reinforcement"}}, "method.type"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"seed": -1}, "seed"),
        ({"training_file": None}, "training_file"),
    ],
)
def test_bad_values_are_400_naming_the_field(client: TestClient, body: dict[str, Any], param: str) -> None:
    error = assert_error(create_job(client, **body), 400, "invalid_value", param)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(param)


def test_micro_batch_larger_than_batch_is_refused(client: TestClient) -> None:
    response = create_job(client, **_diablo(batch_size=2, micro_batch_size=4))
    assert_error(response, 400, "invalid_hyperparameters", f"{DIABLO}.micro_batch_size")


def test_learning_rate_and_multiplier_together_conflict(client: TestClient) -> None:
    response = create_job(client, **_diablo(learning_rate=1e-3, learning_rate_multiplier=2))
    assert_error(response, 400, "invalid_hyperparameters", f"{DIABLO}.learning_rate")


def test_missing_fields(client: TestClient) -> None:
    response = client.post("/v1/fine_tuning/jobs", json={"model": "default"})
    assert_error(response, 400, "missing_required_parameter", "training_file")


def test_unknown_or_unusable_files(client: TestClient, settings: Settings) -> None:
    missing = create_job(client, training_file="file-doesnotexist")
    assert_error(missing, 400, "file_not_found", "training_file")
    bad_validation = create_job(client, validation_file="file-nope")
    assert_error(bad_validation, 400, "file_not_found", "validation_file")
    file_id = uploaded_file_id(client)
    (settings.files_dir / f"{file_id}.jsonl").unlink()
    assert_error(create_job(client, training_file=file_id), 400, "file_not_found", "training_file")
    assert client.get("/v1/fine_tuning/jobs").json()["data"] == []


def test_unknown_base_and_fine_tuned_models(client: TestClient) -> None:
    unknown = assert_error(create_job(client, model="gpt-4o-mini"), 400, "model_not_found", "model")
    assert DEFAULT_MODEL_ID in unknown["message"]
    fine_tuned = create_job(client, model=f"ft:{DEFAULT_MODEL_ID}::abc")
    assert_error(fine_tuned, 404, "model_not_found", "model")


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
def test_precision_is_stored_as_asked_until_a_worker_resolves_it(client: TestClient, precision: str) -> None:
    job = create_job(client, **_diablo(precision=precision)).json()
    assert job["method"]["diablo"]["hyperparameters"]["precision"] == precision


def test_precision_defaults_to_auto_and_quantization_to_none(client: TestClient) -> None:
    resolved = create_job(client).json()["method"]["diablo"]["hyperparameters"]
    assert (resolved["precision"], resolved["quantization"]) == ("auto", None)
    quantized = create_job(client, **_diablo(quantization="nf4")).json()
    assert quantized["method"]["diablo"]["hyperparameters"]["quantization"] == "nf4"


def test_canonical_id_and_local_checkpoints_are_base_models(client: TestClient, settings: Settings) -> None:
    assert create_job(client, model=DEFAULT_MODEL_ID).json()["model"] == DEFAULT_MODEL_ID
    local = settings.data_dir / "models" / "tiny-llama"
    local.mkdir(parents=True)
    (local / "config.json").write_text("{}")
    assert create_job(client, model="tiny-llama").json()["model"] == "tiny-llama"


def test_enqueue_failure_fails_the_job_and_answers_503(tmp_path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path / "data", sqlite_url, broker_url="redis://127.0.0.1:1/0")
    from api.main import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        file_id = upload(client, b'{"prompt": "a", "completion": "b"}\n').json()["id"]
        error = assert_error(create_job(client, training_file=file_id), 503, "enqueue_failed")
        assert error["type"] == "server_error"
        [job] = client.get("/v1/fine_tuning/jobs").json()["data"]
    assert job["status"] == "failed"
    assert job["error"] == {"code": "enqueue_failed", "message": "The job could not be queued", "param": None}
    assert job["finished_at"] is not None


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    body = {"model": "default", "training_file": uploaded_file_id(client), "suffix": "once"}
    headers = {"Idempotency-Key": "retry-1"}
    first = client.post("/v1/fine_tuning/jobs", json=body, headers=headers).json()
    again = client.post("/v1/fine_tuning/jobs", json=body, headers=headers).json()
    assert again["id"] == first["id"]
    assert len(client.get("/v1/fine_tuning/jobs").json()["data"]) == 1
    other = client.post("/v1/fine_tuning/jobs", json=body | {"suffix": "twice"}, headers=headers)
    assert_error(other, 409, "idempotency_key_reused", "Idempotency-Key")
    fresh = client.post("/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "retry-2"}).json()
    assert fresh["id"] != first["id"]


def test_the_example_count_is_recorded_at_upload_and_counted_once_for_older_files(
    client: TestClient, db: Session
) -> None:
    """Creating a job reads the count the upload recorded; a file from before that is counted once."""
    recorded = uploaded_file_id(client, examples=4)
    row = db.get(File, recorded)
    assert row is not None and row.num_examples == 4
    # The stored count is what resolution uses: 100 "examples" hold 16 out and give up to 2 x 3 epochs, 4
    # would give 25 (too few to hold any out).
    row.num_examples = 100
    db.commit()
    job = create_job(client, training_file=recorded).json()
    assert job["hyperparameters"]["n_epochs"] == 6
    older = uploaded_file_id(client, examples=4)
    db.get(File, older).num_examples = None  # as rows uploaded before migration 0004
    db.commit()
    assert create_job(client, training_file=older).json()["hyperparameters"]["n_epochs"] == 25
    db.expire_all()
    assert db.get(File, older).num_examples == 4
