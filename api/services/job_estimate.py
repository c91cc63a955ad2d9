"""Estimating a job before it is created: the create request's checks, then ``registry.throughput``."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.schemas.job_estimate import JobEstimatePublic
from api.schemas.jobs import JobCreate
from api.services.files import count_examples
from api.services.jobs import check_file, resolve_base_model, resolve_request
from registry.settings import Settings
from registry.throughput import estimate_job, find_throughput


def estimate_fine_tuning_job(
    session: Session, settings: Settings, project: str, body: JobCreate
) -> JobEstimatePublic:
    """Steps, tokens and duration of the job ``body`` would create; nothing is recorded or queued.

    Raises:
        APIError: 400 for the bad models, files or hyperparameters that creating the job would refuse.
    """
    model = resolve_base_model(body.model, settings)
    training = check_file(session, project, body.training_file, "training_file")
    if body.validation_file is not None:
        check_file(session, project, body.validation_file, "validation_file")
    num_examples = count_examples(training)
    spec = resolve_request(body, settings, num_examples)
    total_steps = spec.total_steps(num_examples)
    estimate = estimate_job(
        find_throughput(session, model),
        file_bytes=training.bytes,
        num_examples=num_examples,
        total_steps=total_steps,
        batch_size=int(spec.batch_size),
    )
    return JobEstimatePublic.of(
        estimate,
        model=model,
        training_file=training.id,
        num_examples=num_examples,
        hyperparameters=spec.openai_view(),
    )
