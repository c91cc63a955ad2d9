"""What a fine-tuning request may ask for: OpenAI's three hyperparameters and the DiaBlo/schedule settings.

Users give ``n_epochs``, ``batch_size`` and ``learning_rate_multiplier`` (each ``"auto"`` or a number) at the
top level or in ``method.<type>.hyperparameters``; ``method.diablo`` adds the DiaBlo and schedule settings.
These models are the API's request schema; their bounds are the service's limits, and their defaults are the
core configs' own (``TrainingConfig``, ``DiaBloConfig``), read from them rather than restated.
``diablo_core.spec.job`` resolves them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema

from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.models.quantization_names import QUANTIZATIONS, check_quantization
from diablo_core.precision.names import PRECISIONS, check_precision
from diablo_core.spec.training import STRATEGIES, TrainingConfig

AUTO = "auto"
OPENAI_KEYS = ("n_epochs", "batch_size", "learning_rate_multiplier")
MAX_EPOCHS = 50
MAX_BATCH_SIZE = 256
MAX_LEARNING_RATE_MULTIPLIER = 100.0
MAX_BETA = 2.0
MIN_MAX_LENGTH = 8
MAX_MAX_LENGTH = 131_072


def _auto_or_number(integer: bool, low: float, high: float) -> Any:
    """An ``"auto" | number`` type whose errors name only the field (no union branches)."""
    kind = "an integer" if integer else "a number"
    bound = f"between {low:g} and {high:g}" if integer else f"greater than 0 and at most {high:g}"

    def validate(value: Any) -> Any:
        if value == AUTO:
            return AUTO
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be 'auto' or {kind} {bound}, got {value!r}")
        if integer and not float(value).is_integer():
            raise ValueError(f"must be 'auto' or {kind} {bound}, got {value!r}")
        number = int(value) if integer else float(value)
        if not (low <= number <= high if integer else 0 < number <= high):
            raise ValueError(f"must be 'auto' or {kind} {bound}, got {value!r}")
        return number

    number_schema: dict[str, Any] = {"type": "integer" if integer else "number", "maximum": high}
    number_schema |= {"minimum": low} if integer else {"exclusiveMinimum": 0}
    schema = {"anyOf": [{"type": "string", "const": AUTO}, number_schema], "default": AUTO}
    return Annotated[Any, PlainValidator(validate), WithJsonSchema(schema)]


AutoEpochs = _auto_or_number(True, 1, MAX_EPOCHS)
AutoBatchSize = _auto_or_number(True, 1, MAX_BATCH_SIZE)
AutoMultiplier = _auto_or_number(False, 0, MAX_LEARNING_RATE_MULTIPLIER)
AutoBeta = _auto_or_number(False, 0, MAX_BETA)
# "auto": the longest example of the job's files, within the model's context (``spec.auto.auto_max_length``).
AutoMaxLength = _auto_or_number(True, MIN_MAX_LENGTH, MAX_MAX_LENGTH)
# "auto": a tenth of the planned run, at most the paper's 100 steps (``spec.auto.auto_warmup``).
AutoWarmup = _auto_or_number(True, 0, 1_000_000)
StrictPositive = Annotated[int, Field(strict=True, ge=1)]


class HyperparameterError(ValueError):
    """A combination of hyperparameters that cannot be resolved; ``param`` names the field."""

    def __init__(self, param: str, message: str, code: str = "invalid_hyperparameters") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class OpenAIHyperparameters(BaseModel):
    """The hyperparameters OpenAI's API takes (top level, or ``method.supervised.hyperparameters``)."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: AutoEpochs = AUTO
    batch_size: AutoBatchSize = AUTO
    learning_rate_multiplier: AutoMultiplier = AUTO


class DiaBloHyperparameters(OpenAIHyperparameters):
    """``method.diablo.hyperparameters``: OpenAI's three plus the DiaBlo and schedule settings."""

    num_blocks: Annotated[int, Field(strict=True, ge=1, le=4096)] = DiaBloConfig.num_blocks
    target_modules: list[str] | None = Field(default=None, min_length=1, max_length=64)
    layers: list[Annotated[int, Field(strict=True, ge=0)]] | None = Field(default=None, min_length=1)
    dropout: float = Field(default=DiaBloConfig.dropout, ge=0.0, lt=1.0)
    learning_rate: float | None = Field(default=None, gt=0.0, le=1.0)
    warmup_steps: AutoWarmup = AUTO
    max_steps: Annotated[int, Field(strict=True, ge=1, le=10_000_000)] | None = None
    max_length: AutoMaxLength = AUTO
    scheduler: Literal["linear", "cosine"] = TrainingConfig.scheduler  # SCHEDULERS (a test keeps them equal)
    micro_batch_size: Annotated[int, Field(strict=True, ge=1, le=MAX_BATCH_SIZE)] | None = None
    weight_decay: float = Field(default=TrainingConfig.weight_decay, ge=0.0, le=1.0)
    max_grad_norm: float | None = Field(default=TrainingConfig.max_grad_norm, gt=0.0)
    gradient_checkpointing: bool = TrainingConfig.gradient_checkpointing
    keep_checkpoints: StrictPositive | None = None
    checkpoint_every: Annotated[int, Field(strict=True, ge=0)] | None = None
    eval_every: StrictPositive | None = None
    # "auto" is stored as is: the worker resolves it on its hardware and records what it ran in.
    precision: str = Field(default=TrainingConfig.precision, json_schema_extra={"enum": list(PRECISIONS)})
    # The base's linears in 4 or 8 bits (bitsandbytes) while training; None: full precision.
    quantization: str | None = Field(default=None, json_schema_extra={"enum": [*QUANTIZATIONS, None]})

    # How a job spreads over the processes its worker launches (DIABLO_DEVICES_PER_JOB > 1).
    strategy: str = Field(default=TrainingConfig.strategy, json_schema_extra={"enum": list(STRATEGIES)})

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"must be one of {list(STRATEGIES)}, got {value!r}")
        return value

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        return check_precision(value, "precision")

    @field_validator("quantization")
    @classmethod
    def _known_quantization(cls, value: str | None) -> str | None:
        return check_quantization(value)

    # Stop after this many evaluations without a better validation loss, and keep the best adapter.
    early_stopping_patience: StrictPositive | None = None

    @field_validator("target_modules")
    @classmethod
    def _child_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if not name or "." in name or not name.replace("_", "").isalnum():
                raise ValueError(f"entries must be module child names like 'q_proj', got {name!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"has duplicates: {value!r}")
        return value

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"has duplicates: {value!r}")
        return None if value is None else sorted(value)


class LoRASettings(BaseModel):
    """LoRA's own settings: ``rank`` and ``alpha`` for ``num_blocks``, and LoRA's dropout. The first base of
    the LoRA request and of its resolved spec, so these fields win over the DiaBlo ones both also inherit."""

    rank: Annotated[int, Field(strict=True, ge=1, le=1024)] = LoRAConfig.rank
    alpha: float = Field(default=LoRAConfig.alpha, gt=0.0, le=4096.0)
    dropout: float = Field(default=LoRAConfig.dropout, ge=0.0, lt=1.0)
    num_blocks: SkipJsonSchema[None] = Field(default=None, exclude=True)

    @field_validator("num_blocks", mode="before")
    @classmethod
    def _no_blocks(cls, value: Any) -> None:
        if value is not None:
            raise ValueError("is a DiaBlo setting; a LoRA job takes rank and alpha")
        return None


class LoRAHyperparameters(LoRASettings, DiaBloHyperparameters):
    """``method.lora.hyperparameters``: DiaBlo's request, with ``rank`` and ``alpha`` for ``num_blocks``.

    Everything else (OpenAI's three, targets, layers, dropout, schedule) is shared, with the same rules.
    """


class DPOHyperparameters(DiaBloHyperparameters):
    """``method.dpo.hyperparameters``: the DiaBlo settings plus DPO's ``beta`` ("auto" or a number)."""

    beta: AutoBeta = AUTO
