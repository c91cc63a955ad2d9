"""Estimating a job before it is created: the create request's checks, then ``registry.throughput``.

``POST /v1/fine_tuning/jobs/estimate`` and a create request with ``dry_run`` answer the same object; the dry
run also checks what only creating a job checks (the project's unfinished jobs and storage quota).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.schemas.job_estimate import JobEstimatePublic
from api.schemas.jobs import JobCreate
from api.services.jobs import CheckedRequest, check_concurrent_jobs, check_project_room, check_request
from diablo_core.spec.hyperparameters import AUTO
from registry.settings import Settings
from registry.throughput import estimate_job, find_throughput


def estimate_fine_tuning_job(
    session: Session, settings: Settings, project: str, body: JobCreate
) -> JobEstimatePublic:
    """Steps, tokens and duration of the job ``body`` would create; nothing is recorded or queued.

    Raises:
        APIError: The 400s and 404s that creating the job would answer (models, files, hyperparameters).
    """
    return _estimate(session, check_request(session, settings, project, body))


def dry_run_fine_tuning_job(
    session: Session, settings: Settings, project: str, body: JobCreate
) -> JobEstimatePublic:
    """Every check creating the job makes, in the same order, then its estimate; nothing is recorded.

    Raises:
        APIError: Whatever creating the job would answer instead of creating it (400, 404, 413, 429).
    """
    check_concurrent_jobs(session, settings, project)
    checked = check_request(session, settings, project, body)
    check_project_room(session, settings, project)
    return _estimate(session, checked)


def _estimate(session: Session, checked: CheckedRequest) -> JobEstimatePublic:
    precision = checked.spec.precision  # "auto": whichever precision the model was last measured at
    estimate = estimate_job(
        find_throughput(session, checked.model, None if precision == AUTO else precision),
        file_bytes=checked.training.bytes,
        num_examples=checked.num_examples,
        total_steps=checked.spec.total_steps(checked.num_examples),
        batch_size=int(checked.spec.batch_size),
        file_tokens=checked.training_tokens,
    )
    return JobEstimatePublic.of(
        estimate,
        model=checked.model,
        training_file=checked.training.id,
        num_examples=checked.num_examples,
        hyperparameters=checked.spec.openai_view(),
        method=checked.spec.to_dict(),
    )
