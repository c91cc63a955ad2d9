"""The per-project storage quota (``storage_quota_bytes_per_project``) as the API enforces it.

Uploads are checked with their size before they become visible; job creation is refused once the project
is at its quota, because the adapter a job writes needs room too. A job admitted just under the quota may
end over it by its adapter's size: adapters are small next to the files that train them.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from api.errors import APIError
from registry.project_lock import lock_project
from registry.settings import Settings
from registry.storage import storage_used

QUOTA_CODE = "storage_quota_exceeded"


def check_storage_quota(session: Session, settings: Settings, project: str, adding: int, param: str) -> None:
    """413 ``storage_quota_exceeded`` (naming ``param``) if ``adding`` bytes would exceed the quota.

    ``adding`` is 0 for a job: it is refused only when the project is already at its quota.
    """
    quota = settings.storage_quota_bytes_per_project
    if quota == 0:
        return
    used = storage_used(session, project)
    if used + adding > quota or (adding == 0 and used >= quota):
        message = (
            f"Project {project!r} stores {used} bytes of files and adapters; {adding} more would exceed its "
            f"quota of {quota} bytes: delete files (DELETE /v1/files/{{id}}) or models first"
        )
        raise APIError(413, message, code=QUOTA_CODE, param=param)


def reserve_storage(
    session: Session, settings: Settings, project: str, adding: int, param: str, stored: Path
) -> None:
    """Check the quota again under the project's lock, held until the caller commits the new row.

    Concurrent uploads of one project are thus counted one after another. On refusal the already stored
    file ``stored`` is removed.
    """
    lock_project(session, project)
    try:
        check_storage_quota(session, settings, project, adding, param)
    except APIError:
        stored.unlink(missing_ok=True)
        raise
