"""A job's specification: a request's hyperparameters resolved once, stored, and turned back into configs.

Resolution happens when the job is created; the resolved spec is stored on the job (``to_dict()``, the job's
``method``), the API echoes it and the worker trains with exactly it (``from_dict(...).configs(...)``).

Rules:
- Method-level numbers win over top-level ones, which win over ``"auto"``.
- ``n_epochs`` "auto": 3, raised for small files so that about 100 examples are seen (at most 25 epochs) and
  lowered for large ones so that at most 25,000 are (at least 1), as OpenAI does.
- ``batch_size`` "auto": 16; any batch size is capped to the number of training examples.
- ``max_steps`` replaces the epoch count, so ``n_epochs`` is then the epochs those steps start (rounded up:
  24 steps of 10 per epoch echo 3, though 2.4 run; OpenAI reports an integer).
- ``learning_rate``: ``"auto"`` until the model is known, then (``for_model``) ``learning_rate_multiplier``
  ("auto": 1.0) times the model's rate (DiaBlo: by block size, ``diablo_core.spec.auto``; LoRA: 3e-4),
  unless ``learning_rate`` is given (then the multiplier reported is ``learning_rate`` over the model's rate;
  over the method's base rate, DiaBlo 5e-4 or LoRA 3e-4, until the model is known).
- ``early_stopping_patience``: 4 when ``n_epochs`` is "auto" and no ``max_steps`` is set, else as given
  (None: no early stopping). With it and no validation file, ``validation_holdout`` examples of the training
  file are held out; a file too small to hold any out trains without early stopping. An "auto" ``n_epochs``
  then bounds the run at twice the OpenAI rule's epochs (within the step limit), and ``eval_every`` defaults
  to a tenth of the rule's run. A job with an evaluation file (held-out answers) gets that ``eval_every``
  default too, early stopping or not, so its answers are scored along the run and not only at its end.
- ``target_modules``: ``DiaBloConfig``'s default unless given (LoRA's too, so the two compare like for like).
- ``method.type: "lora"`` resolves by the same rules into a ``ResolvedLoRASpec`` (rank and alpha in place of
  ``num_blocks``), stored as ``{"type": "lora", "lora": {"hyperparameters": {...}}}``.
- ``warmup_steps``: "auto" is a tenth of the planned run (with early stopping, of its bound), at most the
  paper's 100 (``spec.auto.auto_warmup``); a number is kept unless the run is not longer than it
  (``effective_warmup``). The one actually used is stored.
- ``checkpoint_every``: the service setting unless given; 0 turns periodic checkpoints off.
- ``precision``: stored as given ("auto" included); the worker resolves it on its device when the job starts
  and stores the resolved name in its place.
- ``quantization``: how the worker loads the base (None: full precision).
- ``max_length``: "auto" is the longest example's tokens within the model's context (``spec.auto``), set by
  ``fit_max_length`` where the files are counted (the API at creation when it has the model's tokenizer, else
  the worker); until then it stays "auto" in the stored spec.

Adding a setting: a field on ``DiaBloHyperparameters`` (the request schema) named like the ``TrainingConfig``
or ``DiaBloConfig`` field it sets; ``configs`` passes it on by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from diablo_core.methods.diablo.config import DEFAULT_TARGET_MODULES, DiaBloConfig
from diablo_core.methods.lora.config import METHOD as LORA_METHOD
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.spec.auto import (
    DEFAULT_PATIENCE,
    LENGTH_BOUND_FACTOR,
    SMALLEST_HOLDOUT,
    auto_eval_every,
    auto_learning_rate,
    auto_max_length,
    auto_warmup,
    example_length_limit,
    holdout_size,
)
from diablo_core.spec.hyperparameters import (
    AUTO,
    MAX_EPOCHS,
    OPENAI_KEYS,
    DiaBloHyperparameters,
    HyperparameterError,
    LoRAHyperparameters,
    LoRASettings,
    OpenAIHyperparameters,
)
from diablo_core.spec.training import TrainingConfig, count_total_steps, effective_warmup, epochs_covered

METHOD_TYPE = "diablo"
BASE_LEARNING_RATE: float = TrainingConfig.learning_rate
# LLM-Adapters' LoRA rate, the LoRA baseline the DiaBlo paper compares with (docs/lora.md).
LORA_BASE_LEARNING_RATE = 3e-4
DEFAULT_BATCH_SIZE: int = TrainingConfig.batch_size
DEFAULT_N_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_AUTO_EPOCHS = 25
TRAINING_FIELDS = frozenset(f.name for f in fields(TrainingConfig))
DIABLO_FIELDS = frozenset(f.name for f in fields(DiaBloConfig))
LORA_FIELDS = frozenset(f.name for f in fields(LoRAConfig))
# Reported on the job, set no config field: the learning rate it scales is stored with it.
REPORTED_ONLY = frozenset({"learning_rate_multiplier"})
# Set how the worker loads the base model (``load_base_model``), not a config field.
MODEL_FIELDS = frozenset({"quantization"})


class ResolvedJobSpec(DiaBloHyperparameters):
    """Every training setting of a job, with nothing left "auto" (stored in ``job.method``)."""

    stored_type: ClassVar[str] = METHOD_TYPE
    request_schema: ClassVar[type[DiaBloHyperparameters]] = DiaBloHyperparameters
    base_learning_rate: ClassVar[float] = BASE_LEARNING_RATE

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float | Literal["auto"]
    # "auto" until the job's files are counted with the model's tokenizer (``fit_max_length``).
    max_length: Annotated[int, Field(strict=True, ge=1)] | Literal["auto"] = AUTO
    target_modules: list[str]
    checkpoint_every: int
    validation_holdout: int = 0  # examples of the training file held out for validation

    def openai_view(self) -> dict[str, Any]:
        """The three OpenAI hyperparameters, as the job object's ``hyperparameters`` shows them."""
        return {key: getattr(self, key) for key in OPENAI_KEYS}

    def to_dict(self) -> dict[str, Any]:
        """The stored form, the job object's ``method``: ``{"type": "diablo", "diablo": {"hyperparameters":
        {...}}}``."""
        return {"type": self.stored_type, self.stored_type: {"hyperparameters": self.model_dump()}}

    @classmethod
    def from_dict(cls, method: Mapping[str, Any]) -> ResolvedJobSpec:
        """Read a stored spec (``to_dict()`` output, as every job row holds it); called on ResolvedJobSpec,
        it gives the class its ``type`` names (a ``ResolvedLoRASpec`` for ``"lora"``).

        Raises:
            KeyError, TypeError, ValueError: If ``method`` holds no complete resolved spec.
        """
        kind = SPEC_TYPES[method.get("type", METHOD_TYPE)] if cls is ResolvedJobSpec else cls
        return kind.model_validate(method[kind.stored_type]["hyperparameters"])

    def total_steps(self, num_examples: int) -> int:
        """Optimizer steps the run takes over ``num_examples`` examples."""
        return count_total_steps(num_examples, self.batch_size, self.n_epochs, self.max_steps)

    def for_model(self, hidden_size: int) -> ResolvedJobSpec:
        """This spec with the learning rate chosen for a model of width ``hidden_size``."""
        model_rate = self.model_learning_rate(hidden_size)
        if self.learning_rate == AUTO:
            rate = self.learning_rate_multiplier * model_rate
            return self.model_copy(update={"learning_rate": rate})
        return self.model_copy(update={"learning_rate_multiplier": self.learning_rate / model_rate})

    def length_limit(self, context_length: int | None) -> int | None:
        """The most tokens one example may have (``spec.auto``; None: no limit)."""
        return example_length_limit(self.max_length, context_length)

    def fit_max_length(self, longest_example: int, context_length: int | None) -> ResolvedJobSpec:
        """This spec with an "auto" ``max_length`` resolved for files whose longest example has
        ``longest_example`` tokens (an explicit one is kept)."""
        if self.max_length != AUTO:
            return self
        return self.model_copy(update={"max_length": auto_max_length(longest_example, context_length)})

    def model_learning_rate(self, hidden_size: int) -> float:
        """The method's rate for a model of width ``hidden_size`` (DiaBlo's depends on its block size)."""
        return auto_learning_rate(hidden_size, self.num_blocks)

    def adapter_config(self) -> DiaBloConfig | LoRAConfig:
        """The adapter's config (known before the model is loaded): DiaBlo's here, LoRA's for a LoRA job."""
        return DiaBloConfig(**self._adapter(DIABLO_FIELDS))

    def configs(
        self, *, seed: int, device: str, **training: Any
    ) -> tuple[TrainingConfig, DiaBloConfig | LoRAConfig]:
        """The core configs this spec trains with; ``training`` sets further ``TrainingConfig`` fields.

        Raises:
            ValueError: If a config refuses a value, or the learning rate is still "auto" (``for_model``).
        """
        return self.training_config(seed=seed, device=device, **training), self.adapter_config()

    def training_config(self, *, seed: int, device: str, **training: Any) -> TrainingConfig:
        """The ``TrainingConfig`` of this spec (the part every method shares).

        Raises:
            ValueError: If the config refuses a value, or the learning rate is still "auto" (``for_model``).
        """
        if self.learning_rate == AUTO:
            raise ValueError("learning_rate is 'auto': choose it for the model first (for_model)")
        if self.max_length == AUTO:
            raise ValueError("max_length is 'auto': count the files' examples first (fit_max_length)")
        values = self.model_dump()
        own = {name: values[name] for name in TRAINING_FIELDS & values.keys()}
        own["checkpoint_every"] = self.checkpoint_every or None  # 0: no periodic checkpoints
        return TrainingConfig(**own, seed=seed, device=device, **training)

    def _adapter(self, names: frozenset[str]) -> dict[str, Any]:
        adapter = {name: getattr(self, name) for name in names & self.model_fields.keys()}
        adapter["target_modules"] = tuple(self.target_modules)
        adapter["layers"] = None if self.layers is None else tuple(self.layers)
        return adapter


def auto_epochs(num_examples: int) -> int:
    """OpenAI's "auto" epoch count: 3, adjusted so that 100 to 25,000 examples are seen in total."""
    if num_examples * DEFAULT_N_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / max(1, num_examples)))
    if num_examples * DEFAULT_N_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // num_examples)
    return DEFAULT_N_EPOCHS


def _merge(
    top: OpenAIHyperparameters | None,
    method: OpenAIHyperparameters | None,
    schema: type[DiaBloHyperparameters] = DiaBloHyperparameters,
) -> DiaBloHyperparameters:
    """One set of values: method-level numbers win over top-level ones, which win over "auto"."""
    merged = method.model_dump() if isinstance(method, schema) else {}
    for source in (top, method):
        for key in OPENAI_KEYS:
            value = AUTO if source is None else getattr(source, key)
            if value != AUTO:
                merged[key] = value
    return schema.model_validate(merged)


def resolve_job_spec(
    hyperparameters: OpenAIHyperparameters | None,
    method_hyperparameters: OpenAIHyperparameters | None,
    *,
    num_examples: int,
    checkpoint_every: int = 50,
    method_type: str = METHOD_TYPE,
    max_steps_limit: int | None = None,
    has_validation_file: bool = False,
    has_evaluation_file: bool = False,
    spec_class: type[ResolvedJobSpec] | None = None,
) -> ResolvedJobSpec:
    """Resolve "auto" values and defaults for a run over ``num_examples`` training examples.

    Args:
        hyperparameters: The request's top-level ``hyperparameters``.
        method_hyperparameters: ``method.<type>.hyperparameters`` (its values win over the top level).
        num_examples: Examples in the training file.
        checkpoint_every: The service's default checkpoint interval (0: none).
        method_type: The method's type (``SPEC_TYPES``): the spec it resolves to, and the name in errors.
        max_steps_limit: The most optimizer steps a run may take (None: no limit).
        has_validation_file: The job has a validation file (no hold-out is needed for early stopping).
        has_evaluation_file: The job has an evaluation file (evaluations are spaced along the run).
        spec_class: The spec to resolve to, for a method that adds settings of its own (DPO's ``beta``)
            and resolves the shared ones here; by default ``SPEC_TYPES[method_type]``.

    Raises:
        HyperparameterError: For combinations that cannot be honoured, with ``param`` naming the field.
    """
    spec_class = spec_class or SPEC_TYPES[method_type]
    base_rate = spec_class.base_learning_rate
    given = _merge(hyperparameters, method_hyperparameters, spec_class.request_schema)
    where = f"method.{method_type}.hyperparameters"
    if given.learning_rate is not None and given.learning_rate_multiplier != AUTO:
        message = "give learning_rate or learning_rate_multiplier, not both"
        raise HyperparameterError(f"{where}.learning_rate", message)
    patience, holdout = _early_stopping(given, num_examples, has_validation_file, where)
    num_examples -= holdout
    batch_size = DEFAULT_BATCH_SIZE if given.batch_size == AUTO else given.batch_size
    batch_size = max(1, min(batch_size, num_examples))
    if given.micro_batch_size is not None and given.micro_batch_size > batch_size:
        message = f"micro_batch_size ({given.micro_batch_size}) exceeds batch_size ({batch_size})"
        raise HyperparameterError(f"{where}.micro_batch_size", message)
    multiplier = 1.0 if given.learning_rate_multiplier == AUTO else given.learning_rate_multiplier
    multiplier = given.learning_rate / base_rate if given.learning_rate else multiplier
    n_epochs = auto_epochs(num_examples) if given.n_epochs == AUTO else given.n_epochs
    if given.max_steps is not None:  # the steps decide how many epochs run
        n_epochs = epochs_covered(num_examples, batch_size, given.max_steps)
    rule_steps = count_total_steps(num_examples, batch_size, n_epochs, given.max_steps)
    values = given.model_dump() | {
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": multiplier,
        "learning_rate": given.learning_rate or AUTO,
        "target_modules": given.target_modules or list(DEFAULT_TARGET_MODULES),
        "checkpoint_every": checkpoint_every if given.checkpoint_every is None else given.checkpoint_every,
        "early_stopping_patience": patience,
        "validation_holdout": holdout,
        "eval_every": given.eval_every
        or (auto_eval_every(rule_steps) if patience or has_evaluation_file else None),
    }
    if patience and given.n_epochs == AUTO and given.max_steps is None:
        values["n_epochs"] = _bounded_epochs(n_epochs, math.ceil(num_examples / batch_size), max_steps_limit)
    resolved = spec_class.model_validate(values)
    total = resolved.total_steps(num_examples)
    if max_steps_limit is not None and total > max_steps_limit:
        raise _too_many_steps(where, resolved, total, max_steps_limit)
    warmup = (
        auto_warmup(total)
        if resolved.warmup_steps == AUTO
        else effective_warmup(resolved.warmup_steps, total)
    )
    return resolved.model_copy(update={"warmup_steps": warmup})


def _early_stopping(
    given: DiaBloHyperparameters, num_examples: int, has_validation_file: bool, where: str
) -> tuple[int | None, int]:
    """The patience (None: no early stopping) and the examples held out of the training file for it."""
    length_is_auto = given.n_epochs == AUTO and given.max_steps is None  # max_steps is a length too
    patience = given.early_stopping_patience or (DEFAULT_PATIENCE if length_is_auto else None)
    if patience is None or has_validation_file:
        return patience, 0
    holdout = holdout_size(num_examples)
    if holdout == 0 and given.early_stopping_patience is not None:
        message = (
            f"early_stopping_patience needs a validation_file, or a training file of at least "
            f"{4 * SMALLEST_HOLDOUT} examples to hold some out; this one has {num_examples}"
        )
        raise HyperparameterError(f"{where}.early_stopping_patience", message)
    return (patience if holdout else None), holdout


def _bounded_epochs(rule_epochs: int, steps_per_epoch: int, max_steps_limit: int | None) -> int:
    """Early stopping's bound: ``LENGTH_BOUND_FACTOR`` times the rule's epochs, within the limits."""
    epochs = min(MAX_EPOCHS, LENGTH_BOUND_FACTOR * rule_epochs)
    if max_steps_limit is not None:
        epochs = min(epochs, max(rule_epochs, max_steps_limit // steps_per_epoch))
    return epochs


def _too_many_steps(where: str, resolved: ResolvedJobSpec, total: int, limit: int) -> HyperparameterError:
    """The error naming ``max_steps`` when it was given, else ``n_epochs`` (the steps come from epochs)."""
    field = "max_steps" if resolved.max_steps is not None else "n_epochs"
    message = f"{field}: the run would take {total} optimizer steps; the limit is {limit}"
    return HyperparameterError(f"{where}.{field}", message, code="max_steps_too_large")


class ResolvedLoRASpec(LoRASettings, ResolvedJobSpec):
    """A LoRA job's settings, nothing left "auto": the shared ones plus ``rank`` and ``alpha``."""

    stored_type: ClassVar[str] = LORA_METHOD
    request_schema: ClassVar[type[DiaBloHyperparameters]] = LoRAHyperparameters
    base_learning_rate: ClassVar[float] = LORA_BASE_LEARNING_RATE

    def model_learning_rate(self, hidden_size: int) -> float:
        """LoRA's rate does not follow the model's width here: LLM-Adapters' 3e-4 (docs/lora.md)."""
        del hidden_size
        return LORA_BASE_LEARNING_RATE

    def adapter_config(self) -> LoRAConfig:
        """The LoRA config (rank, alpha, dropout, targets, layers)."""
        return LoRAConfig(**self._adapter(LORA_FIELDS))


# ``method.type`` -> the spec it resolves to ("supervised" is OpenAI's name for the default method).
SPEC_TYPES: dict[str, type[ResolvedJobSpec]] = {
    METHOD_TYPE: ResolvedJobSpec,
    "supervised": ResolvedJobSpec,
    ResolvedLoRASpec.stored_type: ResolvedLoRASpec,
}
