"""Fine-tuning hyperparameters: what users may ask for, and how "auto" and defaults resolve.

Users give OpenAI's three hyperparameters (``n_epochs``, ``batch_size``, ``learning_rate_multiplier``, each
``"auto"`` or a number) at the top level or in ``method.<type>.hyperparameters``; ``method.diablo`` adds the
DiaBlo settings. Resolution happens once, when the job is created, and the resolved values are stored on the
job: the API echoes them and the worker trains with exactly them (``load_resolved``).

Resolution rules:
- ``n_epochs`` "auto": 3, raised for small files so that about 100 examples are seen (at most 25 epochs) and
  lowered for large ones so that at most 25,000 are (at least 1), as OpenAI does.
- ``batch_size`` "auto": 16; any batch size is capped to the number of training examples.
- ``learning_rate``: ``learning_rate_multiplier`` ("auto": 1.0) times the DiaBlo base rate 5e-4, unless
  ``learning_rate`` is given (then the multiplier reported is ``learning_rate / 5e-4``).
- ``warmup_steps`` (100): kept when shorter than the run; a run not longer than its warm-up warms up for a
  tenth of its steps instead (the rule of
  ``diablo_core.training.schedule.effective_warmup``). The stored value is
  the one actually used.
- ``checkpoint_every``: the service setting unless given; 0 turns periodic checkpoints off.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator

BASE_LEARNING_RATE = 5e-4
DEFAULT_N_EPOCHS = 3
DEFAULT_BATCH_SIZE = 16
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_AUTO_EPOCHS = 25
MAX_EPOCHS = 50
MAX_BATCH_SIZE = 256
MAX_LEARNING_RATE_MULTIPLIER = 100.0
AUTO = "auto"
OPENAI_KEYS = ("n_epochs", "batch_size", "learning_rate_multiplier")


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

    num_blocks: Annotated[int, Field(strict=True, ge=1, le=4096)] = 64
    target_modules: list[str] | None = Field(default=None, min_length=1, max_length=64)
    layers: list[Annotated[int, Field(strict=True, ge=0)]] | None = Field(default=None, min_length=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    learning_rate: float | None = Field(default=None, gt=0.0, le=1.0)
    warmup_steps: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 100
    max_steps: Annotated[int, Field(strict=True, ge=1, le=10_000_000)] | None = None
    max_length: Annotated[int, Field(strict=True, ge=8, le=131_072)] = 256
    scheduler: Literal["linear", "cosine"] = "linear"
    micro_batch_size: Annotated[int, Field(strict=True, ge=1, le=MAX_BATCH_SIZE)] | None = None
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    gradient_checkpointing: bool = False
    keep_checkpoints: StrictPositive | None = None
    checkpoint_every: Annotated[int, Field(strict=True, ge=0)] | None = None
    eval_every: StrictPositive | None = None

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


class ResolvedHyperparameters(BaseModel):
    """Every training setting of a job, with nothing left "auto" (stored in ``job.method``)."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    num_blocks: int
    target_modules: list[str]
    layers: list[int] | None
    dropout: float
    warmup_steps: int
    max_steps: int | None
    max_length: int
    scheduler: str
    micro_batch_size: int | None
    weight_decay: float
    max_grad_norm: float | None
    gradient_checkpointing: bool
    keep_checkpoints: int | None
    checkpoint_every: int
    eval_every: int | None

    def openai_view(self) -> dict[str, Any]:
        """The three OpenAI hyperparameters, as the job object's ``hyperparameters`` shows them."""
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }

    def method_view(self) -> dict[str, Any]:
        """The job object's ``method``: ``{"type": "diablo", "diablo": {"hyperparameters": {...}}}``."""
        return {"type": "diablo", "diablo": {"hyperparameters": self.model_dump()}}

    def total_steps(self, num_examples: int) -> int:
        """Optimizer steps the run takes over ``num_examples`` examples."""
        if self.max_steps is not None:
            return self.max_steps
        return self.n_epochs * math.ceil(num_examples / self.batch_size)

    def training_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``diablo_core.training.loop.TrainingConfig`` (plus seed, device)."""
        return {
            "learning_rate": self.learning_rate,
            "n_epochs": self.n_epochs,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "micro_batch_size": self.micro_batch_size,
            "max_length": self.max_length,
            "warmup_steps": self.warmup_steps,
            "scheduler": self.scheduler,
            "weight_decay": self.weight_decay,
            "max_grad_norm": self.max_grad_norm,
            "gradient_checkpointing": self.gradient_checkpointing,
            "keep_checkpoints": self.keep_checkpoints,
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every or None,
        }

    def diablo_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``diablo_core.methods.diablo.config.DiaBloConfig``."""
        layers = None if self.layers is None else tuple(self.layers)
        return {
            "num_blocks": self.num_blocks,
            "target_modules": tuple(self.target_modules),
            "dropout": self.dropout,
            "layers": layers,
        }


def auto_epochs(num_examples: int) -> int:
    """OpenAI's "auto" epoch count: 3, adjusted so that 100 to 25,000 examples are seen in total."""
    if num_examples * DEFAULT_N_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / max(1, num_examples)))
    if num_examples * DEFAULT_N_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // num_examples)
    return DEFAULT_N_EPOCHS


def effective_warmup(warmup_steps: int, total_steps: int) -> int:
    """The warm-up actually used: kept when shorter than the run, else a tenth of the run."""
    return warmup_steps if warmup_steps < total_steps else total_steps // 10


def _merge(top: OpenAIHyperparameters | None, method: OpenAIHyperparameters | None) -> DiaBloHyperparameters:
    """One set of values: method-level numbers win over top-level ones, which win over "auto"."""
    merged = method.model_dump() if isinstance(method, DiaBloHyperparameters) else {}
    for source in (top, method):
        for key in OPENAI_KEYS:
            value = AUTO if source is None else getattr(source, key)
            if value != AUTO:
                merged[key] = value
    return DiaBloHyperparameters.model_validate(merged)


def resolve_hyperparameters(
    hyperparameters: OpenAIHyperparameters | None,
    method_hyperparameters: OpenAIHyperparameters | None,
    *,
    num_examples: int,
    checkpoint_every: int = 50,
    method_type: str = "diablo",
    max_steps_limit: int | None = None,
) -> ResolvedHyperparameters:
    """Resolve "auto" values and defaults for a run over ``num_examples`` training examples.

    Args:
        hyperparameters: The request's top-level ``hyperparameters``.
        method_hyperparameters: ``method.<type>.hyperparameters`` (its values win over the top level).
        num_examples: Examples in the training file.
        checkpoint_every: The service's default checkpoint interval (0: none).
        method_type: The method's type, used to name fields in errors.
        max_steps_limit: The most optimizer steps a run may take (None: no limit).

    Raises:
        HyperparameterError: For combinations that cannot be honoured, with ``param`` naming the field.
    """
    given = _merge(hyperparameters, method_hyperparameters)
    where = f"method.{method_type}.hyperparameters"
    if given.learning_rate is not None and given.learning_rate_multiplier != AUTO:
        message = "give learning_rate or learning_rate_multiplier, not both"
        raise HyperparameterError(f"{where}.learning_rate", message)
    batch_size = DEFAULT_BATCH_SIZE if given.batch_size == AUTO else given.batch_size
    batch_size = max(1, min(batch_size, num_examples))
    if given.micro_batch_size is not None and given.micro_batch_size > batch_size:
        message = f"micro_batch_size ({given.micro_batch_size}) exceeds batch_size ({batch_size})"
        raise HyperparameterError(f"{where}.micro_batch_size", message)
    multiplier = 1.0 if given.learning_rate_multiplier == AUTO else given.learning_rate_multiplier
    learning_rate = given.learning_rate or multiplier * BASE_LEARNING_RATE
    values = given.model_dump() | {
        "n_epochs": auto_epochs(num_examples) if given.n_epochs == AUTO else given.n_epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": learning_rate / BASE_LEARNING_RATE,
        "learning_rate": learning_rate,
        "target_modules": given.target_modules or list(DEFAULT_TARGET_MODULES),
        "checkpoint_every": checkpoint_every if given.checkpoint_every is None else given.checkpoint_every,
    }
    resolved = ResolvedHyperparameters.model_validate(values)
    total = resolved.total_steps(num_examples)
    if max_steps_limit is not None and total > max_steps_limit:
        raise _too_many_steps(where, resolved, total, max_steps_limit)
    return resolved.model_copy(update={"warmup_steps": effective_warmup(resolved.warmup_steps, total)})


def _too_many_steps(
    where: str, resolved: ResolvedHyperparameters, total: int, limit: int
) -> HyperparameterError:
    """The error naming ``max_steps`` when it was given, else ``n_epochs`` (the steps come from epochs)."""
    field = "max_steps" if resolved.max_steps is not None else "n_epochs"
    message = f"{field}: the run would take {total} optimizer steps; the limit is {limit}"
    return HyperparameterError(f"{where}.{field}", message, code="max_steps_too_large")


def load_resolved(method: dict[str, Any]) -> ResolvedHyperparameters:
    """Read the resolved hyperparameters stored in a job's ``method`` (see ``method_view``)."""
    return ResolvedHyperparameters.model_validate(method["diablo"]["hyperparameters"])
