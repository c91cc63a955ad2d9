"""Per-request context: a request id, an access log line, and the request's place in the metrics.

The request id is the caller's ``X-Request-ID`` when it is a sane token, else a new ``req-<hex>``; it is bound
to every log record made while the request is handled and returned in the response's ``X-Request-ID``.
Routes are reported by their template (``/v1/fine_tuning/jobs/{job_id}``), never the raw path, so that
neither logs nor metrics grow a label per object id.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import SERVER_ERROR, error_body
from api.metrics import ServiceMetrics
from registry.logging_setup import log_context

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode()  # ASGI header names are lower-case bytes
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A request that matched no route is reported under this name instead of its path.
UNMATCHED_ROUTE = "<unmatched>"

access_logger = logging.getLogger("api.access")
logger = logging.getLogger("api")


def request_id_from(value: str | None) -> str:
    """The caller's request id if it is 1-128 of ``A-Za-z0-9._:-``, else a new ``req-<32 hex>``."""
    if value and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return f"req-{uuid.uuid4().hex}"


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request, or ``UNMATCHED_ROUTE``.

    FastAPI records its own routes in ``scope["route"]``; other routes (the OpenAPI document, the dashboard's
    static files) are found by matching the app's routes again.
    """
    route = scope.get("route")
    if route is None:
        candidates = getattr(scope.get("app"), "routes", ())
        route = next((r for r in candidates if r.matches(scope)[0] is Match.FULL), None)
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestContext:
    """Assigns the request id, answers unhandled errors with the error envelope, logs and times requests."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((value for name, value in scope["headers"] if name == _REQUEST_ID_NAME), b"")
        request_id = request_id_from(raw.decode("latin-1"))
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        begin = time.perf_counter()
        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
                if started:
                    raise
                await self._server_error(scope, receive, send_with_id)
            finally:
                self._record(scope, status, time.perf_counter() - begin)

    @staticmethod
    async def _server_error(scope: Scope, receive: Receive, send: Send) -> None:
        message = "The server had an error while processing your request"
        body = error_body(message, SERVER_ERROR, "internal_error")
        await JSONResponse(body, status_code=500)(scope, receive, send)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route, method = route_template(scope), scope["method"]
        self.metrics.observe_request(route, method, status, seconds)
        if not access_logger.isEnabledFor(logging.INFO):
            return  # no record, no extras built: a deployment may turn the access log off by its level
        path_params = scope.get("path_params") or {}
        access_logger.info(
            "%s %s %d %.1fms",
            method,
            route,
            status,
            seconds * 1000,
            extra={
                "method": method,
                "path": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                **({"job_id": path_params["job_id"]} if "job_id" in path_params else {}),
            },
        )
