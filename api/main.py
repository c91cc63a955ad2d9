"""The FastAPI application: ``create_app(settings)`` and the module-level ``app`` for uvicorn.

Creating the app reads settings only; the database is migrated and the data folders are created when the
app starts (its lifespan), so importing this module touches nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from api.errors import install_error_handlers
from api.routes import files, health, jobs, models
from api.upload_limit import UploadSizeLimit
from registry.db import upgrade_database
from registry.settings import Settings, get_settings

# Every router the app serves; new route modules add theirs here.
ROUTERS: list[APIRouter] = [health.router, files.router, jobs.router, models.router]
FILES_PATH = "/v1/files"


def prepare_storage(settings: Settings) -> None:
    """Create the data folders and apply pending database migrations."""
    for folder in (settings.data_dir, settings.files_dir, settings.adapters_dir):
        folder.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await asyncio.to_thread(prepare_storage, app.state.settings)
    yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: read from ``DIABLO_*`` environment variables)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="DiaBlo fine-tuning service",
        description="OpenAI-compatible fine-tuning with diagonal-block (DiaBlo) adapters.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(UploadSizeLimit, path=FILES_PATH, max_bytes=settings.max_upload_bytes)
    for router in ROUTERS:
        app.include_router(router)
    return app


app = create_app()
