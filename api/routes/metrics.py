"""``/metrics``: Prometheus' text exposition of the app's metrics (outside ``/v1`` and the OpenAPI schema)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.metrics import ServiceMetrics

router = APIRouter(tags=["metrics"], include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Request and inference latency, jobs by status, queue depth, job durations, training speed."""
    service_metrics: ServiceMetrics = request.app.state.metrics
    return Response(service_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
