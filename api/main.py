"""The FastAPI application: ``create_app(settings)`` and the module-level ``app`` for uvicorn.

Creating the app reads settings only; the database is migrated and the data folders are created when the
app starts (its lifespan), so importing this module touches nothing.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from api.body_limit import BodySizeLimit
from api.errors import install_error_handlers
from api.metrics import ServiceMetrics
from api.middleware import RequestContext
from api.routes import dashboard, evaluations, files, health, inference, jobs, metrics, model_content, models
from api.services.inference import inference_lifespan
from api.upload_limit import UploadSizeLimit
from registry.db import upgrade_database
from registry.logging_setup import configure_logging
from registry.settings import Settings, get_settings
from registry.sweeper import periodic_sweeps

# Every router the app serves; new route modules add theirs here.
ROUTERS: list[APIRouter] = [
    health.router,
    files.router,
    jobs.router,
    model_content.router,  # before models.router: its /{model_id:path} would match .../content
    models.router,
    dashboard.router,
    metrics.router,
    inference.router,
    evaluations.router,
]
FILES_PATH = "/v1/files"


def prepare_storage(settings: Settings) -> None:
    """Create the data folders and apply pending database migrations."""
    for folder in (settings.data_dir, settings.files_dir, settings.adapters_dir):
        folder.mkdir(parents=True, exist_ok=True)
    upgrade_database(settings.database_url)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    configure_logging(app.state.settings.log_format)
    await asyncio.to_thread(prepare_storage, app.state.settings)
    # The objects of the imports never die: moving them out of the collector's reach keeps full collections
    # short (benchmarks/api_latency.py, p99). torch and transformers are not among them: they load with the
    # inference engine, which freezes its own objects (api.services.inference).
    gc.collect()
    gc.freeze()
    # Recovers jobs of dead workers and lost queue messages while the API runs (registry.sweeper).
    async with periodic_sweeps(app.state.settings), inference_lifespan(app):
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
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_body_bytes, upload_path=FILES_PATH)
    app.state.metrics = ServiceMetrics(settings)
    # Added last, so it runs first: even a refused upload gets a request id, a log line and a timing.
    app.add_middleware(RequestContext, metrics=app.state.metrics)
    for router in ROUTERS:
        app.include_router(router)
    dashboard.mount_dashboard(app)
    return app


app = create_app()
