"""The job specification, without torch: what a run is asked for and how it resolves.

``training`` holds the core's ``TrainingConfig`` and the step rules (total steps, effective warm-up);
``hyperparameters`` the request side (OpenAI's three plus the DiaBlo and schedule settings, ``"auto"``
allowed);
``job`` the resolution into a ``ResolvedJobSpec``, its stored form, and the configs it rebuilds. The service
(``registry``, ``api``, ``worker``) and the library's training loop both use these, so every setting, default
and rule is written once.
"""

from __future__ import annotations

from diablo_core.spec.hyperparameters import (
    DiaBloHyperparameters,
    HyperparameterError,
    LoRAHyperparameters,
    OpenAIHyperparameters,
)
from diablo_core.spec.job import ResolvedJobSpec, ResolvedLoRASpec, auto_epochs, resolve_job_spec
from diablo_core.spec.training import TrainingConfig, count_total_steps, effective_warmup

__all__ = [
    "DiaBloHyperparameters",
    "HyperparameterError",
    "LoRAHyperparameters",
    "OpenAIHyperparameters",
    "ResolvedJobSpec",
    "ResolvedLoRASpec",
    "TrainingConfig",
    "auto_epochs",
    "count_total_steps",
    "effective_warmup",
    "resolve_job_spec",
]
