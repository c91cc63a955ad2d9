"""A job's model in the worker: its precision resolved and recorded, a quantized base, a parent's blocks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.devices import resolve_device
from diablo_core.methods.diablo.model import adapter_state_dict
from diablo_core.models.quantization import model_quantization
from diablo_core.precision.hardware import resolve_precision
from diablo_core.spec import ResolvedJobSpec
from registry.artifacts import get_adapter
from registry.jobs import get_job
from registry.parent_models import find_parent
from registry.settings import Settings
from tests.worker.test_training_job import WORKER, events_of, metrics_of
from worker.job_config import read_spec
from worker.job_model import load_job_model, resolve_spec_precision
from worker.training_job import run_training_job


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_the_job_records_the_precision_it_trains_in(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, precision: str
) -> None:
    job_id = new_job(diablo={"precision": precision})
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    resolved = resolve_precision(precision, "cpu")
    with sessions() as session:
        job = get_job(session, job_id)
        messages = [event.message for event in events_of(session, job_id)]
        metrics = metrics_of(session, job_id)
    assert ResolvedJobSpec.from_dict(job.method).precision == resolved  # the echo shows what ran
    (note,) = [message for message in messages if message.startswith("Training in")]
    if precision == "auto":
        assert note.startswith(f"Training in {resolved} (auto: cpu ")
    else:
        assert note == f"Training in {precision} (as set)"
    assert {m["precision"] for m in metrics} == {resolved}


def test_a_job_trains_on_an_nf4_base(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = new_job(diablo={"quantization": "nf4", "precision": "fp32"})
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        job = get_job(session, job_id)
        adapter = get_adapter(session, job.fine_tuned_model)
        metrics = metrics_of(session, job_id)
    assert ResolvedJobSpec.from_dict(job.method).quantization == "nf4"
    assert adapter.config["base_model"]["quantization"] == "nf4"
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]


def _parent_job(new_job: Callable[..., str], settings: Settings, sessions: sessionmaker[Session]) -> str:
    job_id = new_job(diablo={"precision": "fp32"})
    assert run_training_job(job_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        return get_job(session, job_id).fine_tuned_model


def test_a_child_job_starts_from_its_parents_blocks(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings, tiny_model_dir: Path
) -> None:
    parent_name = _parent_job(new_job, settings, sessions)
    with sessions() as session:
        parent = find_parent(session, parent_name, "default", settings.adapters_dir)
    assert parent is not None and parent.layout()["num_blocks"] == 4
    child_id = new_job(diablo={"precision": "fp32"})
    with sessions.begin() as session:
        get_job(session, child_id).parent_model = parent_name
        child = get_job(session, child_id)
        spec = read_spec(child.method)
    device = resolve_device("cpu")
    loaded = load_job_model(str(tiny_model_dir), resolve_spec_precision(spec, device), device, Path(), parent)
    expected = load_file(parent.directory / "adapter_model.safetensors")
    initial = adapter_state_dict(loaded.model)
    assert initial.keys() == expected.keys()
    assert all(torch.equal(initial[key], expected[key]) for key in expected)
    assert any(bool(tensor.abs().sum()) for tensor in expected.values())  # trained, not the zero init

    assert run_training_job(child_id, settings, WORKER) == "succeeded"
    with sessions() as session:
        child = get_job(session, child_id)
        adapter = get_adapter(session, child.fine_tuned_model)
        messages = [event.message for event in events_of(session, child_id)]
    assert adapter.parent_model == parent_name
    assert f"Starting from the blocks of {parent_name}" in messages


def test_a_child_of_a_deleted_parent_fails_naming_the_model(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    child_id = new_job()
    with sessions.begin() as session:
        get_job(session, child_id).parent_model = "ft:gone:test:abc"
    assert run_training_job(child_id, settings, WORKER) == "failed"
    with sessions() as session:
        error = get_job(session, child_id).error
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "ft:gone:test:abc" in error["message"]


def test_model_quantization_of_the_loaded_plan(
    new_job: Callable[..., str], sessions: sessionmaker[Session], tiny_model_dir: Path
) -> None:
    job_id = new_job(diablo={"quantization": "int8", "precision": "fp32"})
    with sessions() as session:
        job = get_job(session, job_id)
    device = resolve_device("cpu")
    spec = resolve_spec_precision(read_spec(job.method), device)
    loaded = load_job_model(str(tiny_model_dir), spec, device, Path(), None)
    assert model_quantization(loaded.model) == "int8"
