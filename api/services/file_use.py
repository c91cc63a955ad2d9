"""A file that an unfinished job trains on cannot be deleted: the job would fail when it reads it."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from api.errors import APIError
from registry.jobs import JobStatus
from registry.models import Job
from registry.project_lock import lock_project

# The statuses of jobs that will still read their files.
READING_STATUSES = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.RUNNING)
SHOWN_JOBS = 5


def ensure_file_unused(session: Session, project: str, file_id: str) -> None:
    """409 ``file_in_use`` if an unfinished job of ``project`` uses ``file_id``.

    Takes the project's lock first (held until the caller commits), the lock job creation holds while it
    checks its files and commits: a create and a delete of one file never both succeed.
    """
    lock_project(session, project)
    users = select(Job.id).where(
        Job.project_id == project,
        Job.status.in_(READING_STATUSES),
        or_(Job.training_file == file_id, Job.validation_file == file_id, Job.evaluation_file == file_id),
    )
    jobs = list(session.scalars(users.order_by(Job.id).limit(SHOWN_JOBS)))
    if jobs:
        message = (
            f"File '{file_id}' is used by unfinished fine-tuning jobs ({', '.join(jobs)}); "
            "delete it after they finish, or cancel them first"
        )
        raise APIError(409, message, code="file_in_use", param="file_id")
