"""Turn a job's stored specification into diablo_core configs.

The API resolves every hyperparameter when the job is created (``diablo_core.spec``) and stores the result in
``job.method``; the worker trains with exactly those values, adding only the seed and the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diablo_core.data.datasets import PREFERENCE
from diablo_core.methods.adapters import AdapterConfig
from diablo_core.spec import ResolvedJobSpec, TrainingConfig
from diablo_core.spec.preference import ResolvedDPOSpec, read_stored_spec


class StoredHyperparametersError(ValueError):
    """A job's stored hyperparameters cannot be read (a job not created through the API's resolution)."""


@dataclass(frozen=True)
class JobPlan:
    """Everything training needs to know about a job besides its data and model."""

    training: TrainingConfig
    diablo: AdapterConfig  # the adapter's config: DiaBloConfig, or LoRAConfig for a "lora" job
    quantization: str | None = None
    # A DPO job's beta (its data are preference pairs); None for supervised training.
    beta: float | None = None

    validation_holdout: int = 0  # examples of the training file to validate on (without a validation file)


def data_format(spec: ResolvedJobSpec) -> str | None:
    """The format the job's files must have: ``"preference"`` for DPO; None: chat or prompt/completion."""
    return PREFERENCE if isinstance(spec, ResolvedDPOSpec) else None


def read_spec(method: dict[str, Any] | None) -> ResolvedJobSpec:
    """The resolved spec stored in ``job.method``.

    Raises:
        StoredHyperparametersError: If ``method`` does not hold a complete resolved spec.
    """
    try:
        return read_stored_spec(method or {})
    except (KeyError, TypeError, ValueError) as error:
        raise StoredHyperparametersError(f"stored hyperparameters are incomplete: {error}") from error


def plan_job(spec: ResolvedJobSpec, *, seed: int | None, device: str) -> JobPlan:
    """Build the training and adapter configs of a job from its spec (its learning rate fitted to the model).

    Raises:
        ValueError: If diablo_core refuses a value, or the learning rate is still "auto".
    """
    # Every checkpoint the API lists is resumable, the epoch-end ones included.
    training, diablo = spec.configs(seed=int(seed or 0), device=device, checkpoint_each_epoch=True)
    beta = spec.beta if isinstance(spec, ResolvedDPOSpec) else None
    return JobPlan(
        training=training,
        diablo=diablo,
        quantization=spec.quantization,
        beta=beta,
        validation_holdout=spec.validation_holdout,
    )
