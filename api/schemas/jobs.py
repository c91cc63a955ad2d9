"""Fine-tuning job bodies: the create request, the job object, its events and checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from api.schemas.lists import ListPublic
from api.schemas.rows import RowPublic
from diablo_core.spec.hyperparameters import (
    DiaBloHyperparameters,
    DPOHyperparameters,
    LoRAHyperparameters,
    OpenAIHyperparameters,
)
from registry.job_metrics import estimated_finish
from registry.models import Job, JobEvent

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# OpenAI takes a handful of integrations (Weights & Biases); each is a small settings object.
MAX_INTEGRATIONS = 8
# Request bodies refuse fields they do not know (as OpenAI does), so a misspelt option fails loudly.
FORBID_EXTRA = ConfigDict(extra="forbid")


def _method_section(name: str, hyperparameters: type[BaseModel]) -> type[BaseModel]:
    """The body under a method's type, ``{"hyperparameters": {...}}``, with that method's hyperparameters."""
    return create_model(
        name, __config__=FORBID_EXTRA, __module__=__name__, hyperparameters=(hyperparameters | None, None)
    )


SupervisedMethod = _method_section("SupervisedMethod", OpenAIHyperparameters)
DiaBloMethod = _method_section("DiaBloMethod", DiaBloHyperparameters)
LoRAMethod = _method_section("LoRAMethod", LoRAHyperparameters)
DPOMethod = _method_section("DPOMethod", DPOHyperparameters)


class MethodCreate(BaseModel):
    """``{"type": "diablo"|"supervised"|"lora"|"dpo", "<type>": {"hyperparameters": {...}}}``.

    ``diablo`` and ``supervised`` train DiaBlo blocks, ``dpo`` trains them on preference pairs, ``lora``
    trains LoRA through PEFT."""

    model_config = FORBID_EXTRA

    type: Literal["diablo", "supervised", "lora", "dpo"] = "diablo"
    supervised: SupervisedMethod | None = None
    diablo: DiaBloMethod | None = None
    lora: LoRAMethod | None = None
    dpo: DPOMethod | None = None

    def chosen_hyperparameters(self) -> OpenAIHyperparameters | None:
        """The hyperparameters given under the method's own type."""
        section = getattr(self, self.type)
        return None if section is None else section.hyperparameters


def check_metadata(metadata: Mapping[str, Any]) -> None:
    """OpenAI's metadata rules: at most 16 pairs, string keys of at most 64 characters and string values of
    at most 512.

    Raises:
        ValueError: Naming the rule broken (and the key).
    """
    if len(metadata) > MAX_METADATA_PAIRS:
        raise ValueError(f"at most {MAX_METADATA_PAIRS} key/value pairs are allowed, got {len(metadata)}")
    for key, item in metadata.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValueError(f"keys and values must be strings (key {str(key)[:64]!r})")
        if len(key) > MAX_METADATA_KEY:
            raise ValueError(f"keys must be at most {MAX_METADATA_KEY} characters, got {len(key)}")
        if len(item) > MAX_METADATA_VALUE:
            raise ValueError(f"values must be at most {MAX_METADATA_VALUE} characters (key {key[:64]!r})")


class WandbSettings(BaseModel):
    """Where a Weights & Biases integration logs the run (OpenAI's ``integrations[].wandb``)."""

    model_config = FORBID_EXTRA

    project: str = Field(min_length=1, max_length=128)
    entity: str | None = Field(default=None, max_length=128)
    name: str | None = Field(default=None, max_length=128)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(default=None, max_length=64)


class IntegrationCreate(BaseModel):
    """One integration; ``"wandb"`` is the only type (OpenAI's only one too)."""

    model_config = FORBID_EXTRA

    type: Literal["wandb"]
    wandb: WandbSettings


class JobCreate(BaseModel):
    model_config = FORBID_EXTRA

    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    # Ours: held-out chat examples whose greedy answers each evaluation scores (docs/evaluation.md).
    evaluation_file: str | None = Field(default=None, max_length=64)
    hyperparameters: OpenAIHyperparameters | None = None
    suffix: str | None = Field(default=None, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    method: MethodCreate | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=MAX_METADATA_PAIRS)
    integrations: list[IntegrationCreate] | None = Field(default=None, max_length=MAX_INTEGRATIONS)
    # Ours: check the request as creating the job would and answer its estimate; nothing is created.
    dry_run: bool = Field(
        default=False,
        description="Check the job as creating it would and answer its estimate (fine_tuning.job.estimate); "
        "nothing is created",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_sizes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        check_metadata(value or {})
        return value

    def stored_integrations(self) -> list[dict[str, Any]] | None:
        """The integrations as the job row stores them (the worker reads them back)."""
        if self.integrations is None:
            return None
        return [item.model_dump(mode="json") for item in self.integrations]


class JobError(BaseModel):
    code: str | None = None
    message: str = ""
    param: str | None = None


class JobProgress(BaseModel):
    step: int
    total_steps: int | None
    percent: float | None


class JobPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    started_at: int | None
    finished_at: int | None
    estimated_finish: int | None
    model: str
    # Ours: the fine-tuned model or checkpoint the job continues from (``model`` is then its base).
    parent_model: str | None = None
    fine_tuned_model: str | None
    organization_id: str
    status: str
    error: JobError | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any] | None
    training_file: str
    validation_file: str | None
    evaluation_file: str | None = None
    result_files: list[str]
    trained_tokens: int | None
    seed: int | None
    suffix: str | None
    metadata: dict[str, str] | None
    integrations: list[Any]
    progress: JobProgress | None

    @classmethod
    def from_row(cls, job: Job, latest_metrics: JobEvent | None = None) -> JobPublic:
        """The job object of ``job``: each field is the row's column of that name, but for these few."""
        progress = _progress(latest_metrics)
        derived = {
            "organization_id": job.project_id,
            "metadata": job.metadata_,
            "error": JobError.model_validate(job.error) if job.error else None,
            "estimated_finish": job.estimated_finish or _estimate_finish(job, progress, latest_metrics),
            "progress": progress,
        }
        columns = cls.model_fields.keys() - derived.keys() - {"object"}
        return cls(**{name: getattr(job, name) for name in columns}, **derived)


def _progress(event: JobEvent | None) -> JobProgress | None:
    data = (event.data or {}) if event is not None else {}
    if not isinstance(data.get("step"), int):
        return None
    total = data.get("total_steps") if isinstance(data.get("total_steps"), int) else None
    percent = round(100.0 * data["step"] / total, 1) if total else None
    return JobProgress(step=data["step"], total_steps=total, percent=percent)


def _estimate_finish(job: Job, progress: JobProgress | None, event: JobEvent | None) -> int | None:
    """Extrapolate the pace so far (started_at to the latest metrics) to the remaining steps."""
    if job.status != "running" or progress is None or event is None:
        return None
    return estimated_finish(
        event.created_at, started_at=job.started_at, step=progress.step, total_steps=progress.total_steps
    )


class JobsPublic(ListPublic[JobPublic]):
    pass


class EventPublic(RowPublic):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None


class EventsPublic(ListPublic[EventPublic]):
    pass


class CheckpointPublic(RowPublic):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str = Field(validation_alias="job_id")  # the row's name
    step_number: int
    metrics: dict[str, Any]


class CheckpointsPublic(ListPublic[CheckpointPublic]):
    pass
