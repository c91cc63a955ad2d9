"""The dashboard: ``GET /`` answers its page; its scripts and styles are static files under ``/dashboard/``.

The page is plain HTML with ES modules (no build step, nothing fetched from elsewhere); it talks to the same
``/v1`` API as any client, sending the API key it keeps in the browser's local storage.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.staticfiles import PathLike
from starlette.types import Scope

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"
STATIC_PATH = "/dashboard"
# The page is small and changes with the code; browsers revalidate it instead of serving a stale copy.
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/", response_class=FileResponse)
def dashboard_page() -> FileResponse:
    """The dashboard page."""
    return FileResponse(DASHBOARD_DIR / "index.html", media_type="text/html", headers=NO_CACHE)


class DashboardFiles(StaticFiles):
    """Static files that browsers revalidate on every load (ETag and Last-Modified keep it cheap)."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(NO_CACHE)
        return response


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard's scripts and styles under ``/dashboard/``."""
    app.mount(STATIC_PATH, DashboardFiles(directory=DASHBOARD_DIR), name="dashboard")
