"""The DPO job spec: ``method.type: "dpo"``, the DiaBlo spec's rules plus ``beta``.

``beta`` "auto" is 0.1 (OpenAI's and TRL's default). Every other setting resolves exactly as a DiaBlo job's
(``spec.job.resolve_job_spec``); the stored form is ``{"type": "dpo", "dpo": {"hyperparameters": {...}}}``.
``read_stored_spec`` reads back either stored form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diablo_core.spec.hyperparameters import (
    AUTO,
    DiaBloHyperparameters,
    DPOHyperparameters,
    OpenAIHyperparameters,
)
from diablo_core.spec.job import ResolvedJobSpec, resolve_job_spec

DPO_TYPE = "dpo"
DEFAULT_BETA = 0.1


class ResolvedDPOSpec(ResolvedJobSpec):
    """A DPO job's settings, nothing left "auto"."""

    beta: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": DPO_TYPE, DPO_TYPE: {"hyperparameters": self.model_dump()}}

    @classmethod
    def from_dict(cls, method: Mapping[str, Any]) -> ResolvedDPOSpec:
        return cls.model_validate(method[DPO_TYPE]["hyperparameters"])


def resolve_dpo_spec(
    hyperparameters: OpenAIHyperparameters | None,
    method_hyperparameters: DPOHyperparameters | None,
    **options: Any,
) -> ResolvedDPOSpec:
    """``resolve_job_spec`` for a DPO job (same ``options``), with ``beta`` resolved.

    Raises:
        HyperparameterError: As ``resolve_job_spec``, naming ``method.dpo.hyperparameters.<field>``.
    """
    options.pop("method_type", None)  # always dpo
    given = method_hyperparameters or DPOHyperparameters()
    diablo = DiaBloHyperparameters.model_validate(given.model_dump(exclude={"beta"}))
    resolved = resolve_job_spec(
        hyperparameters, diablo, method_type=DPO_TYPE, spec_class=ResolvedJobSpec, **options
    )
    beta = DEFAULT_BETA if given.beta == AUTO else given.beta
    return ResolvedDPOSpec.model_validate({**resolved.model_dump(), "beta": beta})


def read_stored_spec(method: Mapping[str, Any]) -> ResolvedJobSpec:
    """A stored spec of any method type (``job.method``).

    Raises:
        KeyError, TypeError, ValueError: If ``method`` holds no complete resolved spec.
    """
    if method.get("type") == DPO_TYPE:
        return ResolvedDPOSpec.from_dict(method)
    return ResolvedJobSpec.from_dict(method)
