"""Fine-tuning jobs: checking a request, resolving its hyperparameters, queueing it, cancelling it.

A job is created in ``validating_files`` once its files are checked, moves to ``queued`` and the transaction
commits; only then is the training task sent, so a worker never receives a job it cannot see.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from api.errors import RATE_LIMIT, SERVER_ERROR, APIError, not_found
from api.schemas.jobs import JobCreate, JobPublic
from api.services.example_lengths import fit_example_lengths
from api.services.files import FINE_TUNE, count_examples, find_file
from api.services.idempotency import IdempotentRequest, commit_once, replayed_id
from api.services.method_files import check_evaluation_file, check_file_format
from api.services.parent_models import find_parent_model, inherit_layout
from api.services.quota import check_storage_quota
from diablo_core.spec import HyperparameterError, ResolvedJobSpec, resolve_job_spec
from diablo_core.spec.preference import DPO_TYPE, resolve_dpo_spec
from registry.artifacts import sanitize_suffix
from registry.base_models import find_base_model, is_fine_tuned_name, list_base_models
from registry.errors import error_object
from registry.jobs import InvalidTransition, JobStatus, create_job, get_job, request_cancel, transition
from registry.models import File, Job, JobEvent
from registry.parent_models import ParentAdapter
from registry.project_lock import lock_project
from registry.queue import enqueue_training
from registry.settings import Settings

logger = logging.getLogger("api.jobs")
MAX_SEED = 2**31
CREATE_ROUTE = "POST /v1/fine_tuning/jobs"
CANCEL_ROUTE = "POST /v1/fine_tuning/jobs/{id}/cancel"
# A paused job counts: resuming it must not take the project over its limit.
ACTIVE_STATUSES = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)


def resolve_base_model(name: str, settings: Settings) -> str:
    """The canonical id of the base model ``name``; 400 for unknown models."""
    model = find_base_model(name, settings)
    if model is None:
        known = ", ".join(m.id for m in list_base_models(settings))
        message = f"Model '{name}' not found; base models available: {known}"
        raise APIError(400, message, code="model_not_found", param="model")
    return model.id


def check_file(session: Session, project: str, file_id: str, param: str) -> File:
    """The project's fine-tuning file ``file_id``; 400 naming ``param`` if it is missing or unusable."""
    row = find_file(session, project, file_id)
    if row is None or not Path(row.storage_path).is_file():
        raise APIError(400, f"File '{file_id}' not found", code="file_not_found", param=param)
    if row.purpose != FINE_TUNE:
        message = f"File '{file_id}' has purpose {row.purpose!r}; fine-tuning needs purpose {FINE_TUNE!r}"
        raise APIError(400, message, code="invalid_file_purpose", param=param)
    return row


def resolve_request(body: JobCreate, settings: Settings, num_examples: int) -> ResolvedJobSpec:
    """The request's hyperparameters with "auto" resolved; 400 naming the field if they conflict."""
    method = body.method
    resolve = resolve_dpo_spec if method and method.type == DPO_TYPE else resolve_job_spec
    try:
        return resolve(
            body.hyperparameters,
            method.chosen_hyperparameters() if method else None,
            num_examples=num_examples,
            checkpoint_every=settings.checkpoint_every,
            max_steps_limit=settings.max_steps_limit,
            method_type=method.type if method else "diablo",
            has_validation_file=body.validation_file is not None,
            has_evaluation_file=body.evaluation_file is not None,
        )
    except HyperparameterError as error:
        raise APIError(400, str(error), code=error.code, param=error.param) from error


@dataclass(frozen=True)
class CheckedRequest:
    """A create request that passed every check before the job is recorded (shared with estimates)."""

    model: str
    training: File
    num_examples: int
    spec: ResolvedJobSpec
    parent: ParentAdapter | None
    training_tokens: int | None = None  # counted with the model's tokenizer (None: the API has none)


def check_request(session: Session, settings: Settings, project: str, body: JobCreate) -> CheckedRequest:
    """The request's base model, files and resolved spec (``max_length`` checked against every example);
    400/404 as creating the job answers."""
    parent = (
        find_parent_model(session, settings, project, body.model) if is_fine_tuned_name(body.model) else None
    )
    model = parent.base_model if parent else resolve_base_model(body.model, settings)
    files = _check_files(session, project, body)
    num_examples = count_examples(files["training_file"])
    resolved = resolve_request(body, settings, num_examples)
    if parent is not None:
        resolved = inherit_layout(resolved, body, parent)
    counted = fit_example_lengths(settings, model, resolved, files)
    return CheckedRequest(
        model, files["training_file"], num_examples, counted.spec, parent, counted.training_tokens
    )


def _check_files(session: Session, project: str, body: JobCreate) -> dict[str, File]:
    """The request's files by param (``training_file``, ``validation_file``), each usable by its method; the
    evaluation file is checked too (held-out chat examples, refused for dpo)."""
    method_type = body.method.type if body.method else "diablo"
    given = {"training_file": body.training_file, "validation_file": body.validation_file}
    files = {}
    for param, file_id in given.items():
        if file_id is not None:
            files[param] = check_file(session, project, file_id, param)
            check_file_format(files[param], method_type, param)
    if body.evaluation_file is not None:  # answered, not trained on: checked apart from max_length
        evaluation = check_file(session, project, body.evaluation_file, "evaluation_file")
        check_evaluation_file(evaluation, method_type)
    return files


def check_project_room(session: Session, settings: Settings, project: str) -> None:
    """429 past the project's unfinished jobs, 413 at its storage quota (a dry run checks these too)."""
    check_concurrent_jobs(session, settings, project)
    check_storage_quota(session, settings, project, 0, "training_file")


def _record_job(session: Session, settings: Settings, project: str, body: JobCreate) -> Job:
    """Check the request and insert the job in ``validating_files`` (flushed, not committed)."""
    checked = check_request(session, settings, project, body)
    model, resolved, parent = checked.model, checked.spec, checked.parent
    # Held until the commit: of concurrent creates, each counts the jobs the ones before it inserted.
    lock_project(session, project)
    check_project_room(session, settings, project)
    job = create_job(
        session,
        model=model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        evaluation_file=body.evaluation_file,
        spec=resolved,
        suffix=sanitize_suffix(body.suffix) or None,
        seed=secrets.randbelow(MAX_SEED) if body.seed is None else body.seed,
        metadata=body.metadata,
        integrations=body.stored_integrations(),
        project_id=project,
    )
    job.parent_model = parent.name if parent else None
    return job


def create_fine_tuning_job(
    session: Session, settings: Settings, project: str, body: JobCreate, idempotency_key: str | None = None
) -> Job:
    """Check, record and queue a job (committed), then send it to the workers.

    With an ``idempotency_key`` already used for the same request, the job it created is returned instead.

    Raises:
        APIError: 400 for bad models, files or hyperparameters; 409 for a reused idempotency key; 429
            ``concurrent_job_limit`` when the project has too many unfinished jobs; 503 ``enqueue_failed``
            when the broker cannot take the job (the job is then marked failed).
    """
    request = IdempotentRequest.of(
        project, idempotency_key, CREATE_ROUTE, body.model_dump(mode="json"), settings.idempotency_ttl_s
    )
    if earlier := replayed_id(session, request):
        return load_job(session, project, earlier)
    check_concurrent_jobs(session, settings, project)  # unlocked: refuses early; _record_job decides
    job = _record_job(session, settings, project, body)
    transition(session, job, JobStatus.QUEUED)  # its files were checked in this transaction
    if earlier := commit_once(session, request, job.id):
        return load_job(session, project, earlier)
    if job.status == JobStatus.QUEUED:
        _enqueue(session, settings, job)
    return job


def check_concurrent_jobs(session: Session, settings: Settings, project: str) -> None:
    """429 ``concurrent_job_limit`` when ``project`` already has the most unfinished jobs it may have."""
    limit = settings.max_concurrent_jobs_per_project
    unfinished = select(func.count()).where(Job.project_id == project, Job.status.in_(ACTIVE_STATUSES))
    count = session.scalar(unfinished) or 0
    if count >= limit:
        message = (
            f"Project {project!r} already has {count} unfinished fine-tuning jobs (the limit is {limit}); "
            "wait for one to finish or cancel one"
        )
        raise APIError(429, message, RATE_LIMIT, "concurrent_job_limit")


def _enqueue(session: Session, settings: Settings, job: Job) -> None:
    """Send the training task; if the broker refuses, fail the job and answer 503."""
    try:
        enqueue_training(job.id, settings)
    except Exception as exc:
        logger.exception("could not enqueue job %s", job.id)
        error = error_object("enqueue_failed", "The job could not be queued")
        try:
            transition(session, job, JobStatus.FAILED, error)
            session.commit()
        except InvalidTransition:
            session.rollback()  # a cancel or a worker got to the job first; leave it as they left it
        message = f"The job queue is unavailable; job {job.id} was not started. Try again later."
        raise APIError(503, message, SERVER_ERROR, "enqueue_failed") from exc


def load_job(session: Session, project: str, job_id: str) -> Job:
    """The project's job ``job_id``; 404 if there is none."""
    job = get_job(session, job_id, project)
    if job is None:
        raise not_found("fine-tuning job", job_id)
    return job


def change_once(
    session: Session,
    project: str,
    request: IdempotentRequest | None,
    job_id: str,
    change: Callable[[Session, Job], object],
    refusal: tuple[str, str],
) -> tuple[Job, bool]:
    """Load the job, apply ``change`` to it and commit, once per idempotency key.

    A retry under the same key answers the job as it is now instead of a 409. ``refusal`` is the 409's code
    and its message, a template over ``job_id`` and ``current`` (the job's status). Answers the job and
    whether this call changed it.
    """
    job = load_job(session, project, job_id)
    if replayed_id(session, request):
        return job, False
    try:
        change(session, job)
    except InvalidTransition as error:
        code, template = refusal
        raise APIError(409, template.format(job_id=job_id, current=error.current), code=code) from error
    if commit_once(session, request, job.id):
        return load_job(session, project, job_id), False
    return job, True


def cancel_job(session: Session, project: str, job_id: str, idempotency_key: str | None = None) -> Job:
    """Cancel a job not yet running, or ask the worker of a running one to stop (committed).

    Raises:
        APIError: 404 for an unknown job; 409 ``job_not_cancellable`` for a finished one, or for an
            idempotency key used with another request.
    """
    request = IdempotentRequest.of(project, idempotency_key, CANCEL_ROUTE, {"job_id": job_id})
    message = "Job {job_id} is already {current}; only unfinished jobs can be cancelled"
    return change_once(session, project, request, job_id, request_cancel, ("job_not_cancellable", message))[0]


# Per job: ix_job_events_job_id_id read backwards from the job's newest event to its newest metrics event, so
# the cost does not grow with the job's length (one event per logged step). Ordering by both index columns
# keeps Postgres on that index when few jobs exist (else it may scan the primary key backwards). Built once:
# a statement reused with new parameters skips SQLAlchemy's construction and cache-key work.
_NEWEST_METRICS_ID = (
    select(JobEvent.id)
    .where(JobEvent.job_id == Job.id, JobEvent.type == "metrics")
    .order_by(JobEvent.job_id.desc(), JobEvent.id.desc())
    .limit(1)
    .scalar_subquery()
)
_LATEST_METRICS = select(JobEvent).where(
    JobEvent.id.in_(select(_NEWEST_METRICS_ID).where(Job.id.in_(bindparam("job_ids", expanding=True))))
)


def latest_metrics(session: Session, job_ids: list[str]) -> dict[str, JobEvent]:
    """The newest metrics event of each job, in one indexed query."""
    if not job_ids:
        return {}
    return {event.job_id: event for event in session.scalars(_LATEST_METRICS, {"job_ids": job_ids})}


def jobs_public(session: Session, jobs: list[Job]) -> list[JobPublic]:
    """Job objects with their progress."""
    metrics = latest_metrics(session, [job.id for job in jobs])
    return [JobPublic.from_row(job, metrics.get(job.id)) for job in jobs]
