"""A job's model: the precision it trains in (resolved on this worker's device), its base (quantized if
asked) and its starting blocks (fresh, or a parent fine-tuned model's).

"auto" precision can only be resolved where the job runs, so the API stores it as given; the worker
resolves it when it starts the job, says so in the job's events, and stores the resolved name in the job's
``method`` (a re-delivered job, and its checkpoints, then keep that precision).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.devices import Device
from diablo_core.errors import AdapterError, ConfigError, ModelLoadError
from diablo_core.methods.adapters import apply_adapter
from diablo_core.methods.diablo.adapter_io import load_adapter
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.models.loading import LoadedModel, load_base_model
from diablo_core.precision.hardware import device_has_native_bf16, resolve_precision, torch_dtype
from diablo_core.spec import ResolvedJobSpec
from diablo_core.spec.preference import read_stored_spec
from registry.base_models import load_source
from registry.models import Job
from registry.parent_models import ParentAdapter, find_parent
from registry.settings import Settings
from worker.job_inputs import JobDataError

METHOD_PARAM = "method.diablo.hyperparameters"


def precision_note(requested: str, resolved: str, device: Device) -> str:
    """The job event naming the precision it trains in, and why."""
    if requested != "auto":
        return f"Training in {resolved} (as set)"
    native = "computes bf16 natively" if device_has_native_bf16(device.name) else "has no native bf16"
    return f"Training in {resolved} (auto: {device.description} {native})"


def resolve_spec_precision(spec: ResolvedJobSpec, device: Device) -> ResolvedJobSpec:
    """``spec`` with its precision resolved on ``device`` ("auto" becomes bf16 or fp32)."""
    return spec.model_copy(update={"precision": resolve_precision(spec.precision, device.name)})


def store_precision(sessions: sessionmaker[Session], job: Job, worker_id: str, precision: str) -> None:
    """Store the resolved precision in the job's ``method`` (the echo shows what runs) while it is ours."""
    spec = read_stored_spec(job.method or {})
    if spec.precision == precision:
        return
    method = spec.model_copy(update={"precision": precision}).to_dict()
    with sessions.begin() as session:
        mine = (Job.id == job.id) & (Job.worker_id == worker_id)
        session.execute(update(Job).where(mine).values(method=method))
    job.method = method


def model_source(model_id: str, settings: Settings) -> str:
    """What ``load_base_model`` takes for the job's model: a local base model's directory, else the name."""
    try:
        return load_source(model_id, settings)
    except LookupError:
        return model_id


def parent_adapter(sessions: sessionmaker[Session], job: Job, settings: Settings) -> ParentAdapter | None:
    """The fine-tuned model or checkpoint the job continues from (None: fresh blocks)."""
    if job.parent_model is None:
        return None
    with sessions() as session:
        parent = find_parent(session, job.parent_model, job.project_id, settings.adapters_dir)
    if parent is None:
        message = f"the model {job.parent_model!r} this job continues from no longer exists"
        raise JobDataError("model_not_found", "model", message)
    return parent


def load_job_model(
    source: str, spec: ResolvedJobSpec, device: Device, data_dir: Path, parent: ParentAdapter | None
) -> LoadedModel:
    """The base in the plan's precision (quantized if asked) with the job's method applied, from the parent's
    blocks when given; a model, layout or parent that does not fit is the user's error."""
    try:
        loaded = load_base_model(
            source,
            data_dir=data_dir,
            device=device.name,
            dtype=torch_dtype(spec.precision),  # resolved by the caller
            quantization=spec.quantization,
        )
    except ModelLoadError as error:
        raise JobDataError("model_not_found", "model", str(error)) from error
    try:
        config = spec.adapter_config()
        apply_adapter(loaded.model, config)
    except ConfigError as error:
        param = "method.lora.hyperparameters" if isinstance(config, LoRAConfig) else METHOD_PARAM
        raise JobDataError("invalid_hyperparameters", param, str(error)) from error
    if parent is not None:
        try:
            # The same base weights, quantized or not as this job asks: the job's own choice.
            load_adapter(loaded.model, parent.directory, allow_quantization_mismatch=True)
        except AdapterError as error:
            raise JobDataError("invalid_parent_model", "model", f"{parent.name}: {error}") from error
    return loaded
