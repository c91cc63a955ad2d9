"""The answer of ``POST /v1/fine_tuning/jobs/estimate`` and of a create request with ``dry_run``: a job's
size and duration before it is created, and its hyperparameters as the job would hold them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel

from registry.throughput import JobEstimate


class JobEstimatePublic(BaseModel):
    object: Literal["fine_tuning.job.estimate"] = "fine_tuning.job.estimate"
    model: str
    training_file: str
    num_examples: int
    hyperparameters: dict[str, Any]
    # The resolved spec the job would store and echo (its ``method``), ``max_length`` included.
    method: dict[str, Any]
    total_steps: int
    estimated_tokens: int
    tokens_per_second: float
    estimated_duration_seconds: int
    basis: Literal["measured", "default"]
    precision: str | None
    jobs_measured: int
    message: str

    @classmethod
    def of(cls, estimate: JobEstimate, **request: Any) -> JobEstimatePublic:
        """The estimate next to the request it answers (``model``, ``training_file``, ``num_examples``,
        ``hyperparameters``, ``method``: fields of this model, validated as such)."""
        return cls(**request, **asdict(estimate))
