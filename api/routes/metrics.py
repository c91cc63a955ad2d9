"""``/metrics``: Prometheus' text exposition of the app's metrics (outside ``/v1`` and the OpenAPI schema).

It needs an API key of any project when ``metrics_auth`` says so (``auto``: whenever ``auth`` is on): the
figures are the whole service's, which no tenant should read without a key.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import BearerCredentials, SettingsDep, get_current_project
from api.metrics import ServiceMetrics
from registry.settings import Settings

router = APIRouter(tags=["metrics"], include_in_schema=False)


def metrics_need_key(settings: Settings) -> bool:
    """Whether ``/metrics`` asks for an API key under ``settings.metrics_auth``."""
    return settings.metrics_auth == "on" or (settings.metrics_auth == "auto" and settings.auth == "on")


async def require_metrics_key(settings: SettingsDep, credentials: BearerCredentials = None) -> None:
    """401 like any ``/v1`` route without a valid key, when ``/metrics`` needs one."""
    if metrics_need_key(settings):
        checked = settings if settings.auth == "on" else settings.model_copy(update={"auth": "on"})
        await get_current_project(checked, credentials)


@router.get("/metrics", dependencies=[Depends(require_metrics_key)])
def metrics(request: Request) -> Response:
    """Request and inference latency, jobs by status, queue depth, job durations, training speed."""
    service_metrics: ServiceMetrics = request.app.state.metrics
    return Response(service_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
