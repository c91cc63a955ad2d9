"""``/v1/fine_tuning/jobs``: create, list, get, cancel, pause and resume jobs; list events and checkpoints."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from api.deps import AfterQuery, CurrentProject, IdempotencyKeyHeader, LimitQuery, SessionDep, SettingsDep
from api.errors import APIError
from api.schemas.job_estimate import JobEstimatePublic
from api.schemas.jobs import (
    CheckpointPublic,
    CheckpointsPublic,
    EventPublic,
    EventsPublic,
    JobCreate,
    JobPublic,
    JobsPublic,
    check_metadata,
)
from api.services import job_control
from api.services import jobs as service
from api.services.job_estimate import dry_run_fine_tuning_job, estimate_fine_tuning_job
from registry.artifacts import list_checkpoints
from registry.jobs import list_events, list_jobs
from registry.models import Job

_METADATA_PARAM = re.compile(r"metadata\[[^\]]+\]")
router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])
CheckpointLimit = Annotated[int, Query(ge=1, le=100)]


def _owned_job_id(session: SessionDep, project: CurrentProject, job_id: str) -> str:
    """The path's job id once the job is known to be the project's (404 otherwise)."""
    service.load_job(session, project, job_id)
    return job_id


OwnedJobId = Annotated[str, Depends(_owned_job_id)]


def _metadata_query(request: Request) -> dict[str, str]:
    """The ``metadata[key]=value`` query parameters (as the OpenAI SDK sends ``metadata={...}``)."""
    pairs = {
        name[len("metadata[") : -1]: value
        for name, value in request.query_params.multi_items()
        if _METADATA_PARAM.fullmatch(name)
    }
    try:
        check_metadata(pairs)
    except ValueError as error:
        raise APIError(400, f"metadata: {error}", code="invalid_metadata", param="metadata") from error
    return pairs


MetadataQuery = Annotated[dict[str, str], Depends(_metadata_query)]


@dataclass(frozen=True)
class _JobPost:
    """A POST that changes one of the project's jobs: the session, project, job id and Idempotency-Key."""

    session: Session
    project: str
    job_id: str
    idempotency_key: str | None

    def public(self, job: Job) -> JobPublic:
        """The changed job as the API answers it, with its progress."""
        return service.jobs_public(self.session, [job])[0]


def _job_post(
    session: SessionDep, project: CurrentProject, job_id: str, idempotency_key: IdempotencyKeyHeader = None
) -> _JobPost:
    return _JobPost(session, project, job_id, idempotency_key)


JobPost = Annotated[_JobPost, Depends(_job_post)]


@router.post("", response_model=JobPublic | JobEstimatePublic)
def create_job(
    session: SessionDep,
    settings: SettingsDep,
    project: CurrentProject,
    body: JobCreate,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobPublic | JobEstimatePublic:
    """Create a fine-tuning job and queue it; with ``dry_run``, check it alike and answer its estimate."""
    if body.dry_run:  # creates nothing, so an Idempotency-Key has nothing to replay
        return dry_run_fine_tuning_job(session, settings, project, body)
    job = service.create_fine_tuning_job(session, settings, project, body, idempotency_key)
    return service.jobs_public(session, [job])[0]


@router.post("/estimate", response_model=JobEstimatePublic)
def estimate_job(
    session: SessionDep, settings: SettingsDep, project: CurrentProject, body: JobCreate
) -> JobEstimatePublic:
    """Estimate a job's steps, tokens and duration without creating it (the create body, checked alike)."""
    return estimate_fine_tuning_job(session, settings, project, body)


@router.get("", response_model=JobsPublic)
def list_fine_tuning_jobs(
    session: SessionDep,
    project: CurrentProject,
    metadata: MetadataQuery,
    after: AfterQuery = None,
    limit: LimitQuery = 20,
) -> JobsPublic:
    """List the project's jobs, newest first; ``metadata[key]=value`` keeps jobs carrying that pair."""
    page = list_jobs(session, project_id=project, after=after, limit=limit, metadata=metadata)
    return JobsPublic.of(service.jobs_public(session, page.data), page.has_more)


@router.get("/{job_id}", response_model=JobPublic)
def retrieve_job(session: SessionDep, project: CurrentProject, job_id: str) -> JobPublic:
    """Retrieve a job with its progress."""
    return service.jobs_public(session, [service.load_job(session, project, job_id)])[0]


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(post: JobPost) -> JobPublic:
    """Cancel a job; a running job stops within one training step (its status shows when it has)."""
    return post.public(service.cancel_job(post.session, post.project, post.job_id, post.idempotency_key))


@router.post("/{job_id}/pause", response_model=JobPublic)
def pause_job(post: JobPost) -> JobPublic:
    """Pause a job: a running one checkpoints at its next step and releases its worker."""
    return post.public(job_control.pause_job(post.session, post.project, post.job_id, post.idempotency_key))


@router.post("/{job_id}/resume", response_model=JobPublic)
def resume_job(post: JobPost, settings: SettingsDep) -> JobPublic:
    """Resume a paused job: it is queued again and continues from its newest checkpoint."""
    job = job_control.resume_job(post.session, settings, post.project, post.job_id, post.idempotency_key)
    return post.public(job)


@router.get("/{job_id}/events", response_model=EventsPublic)
def list_job_events(
    session: SessionDep, job_id: OwnedJobId, after: AfterQuery = None, limit: LimitQuery = 20
) -> EventsPublic:
    """List a job's status messages and step metrics, newest first."""
    page = list_events(session, job_id, after=after, limit=limit)
    return EventsPublic.of([EventPublic.from_row(event) for event in page.data], page.has_more)


@router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic)
def list_job_checkpoints(
    session: SessionDep, job_id: OwnedJobId, after: AfterQuery = None, limit: CheckpointLimit = 10
) -> CheckpointsPublic:
    """List a job's checkpoints, newest first."""
    page = list_checkpoints(session, job_id, after=after, limit=limit)
    return CheckpointsPublic.of([CheckpointPublic.from_row(row) for row in page.data], page.has_more)
