"""Liveness and readiness probes (outside ``/v1``, as orchestrators expect)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import SettingsDep
from api.errors import SERVER_ERROR, error_body
from api.services.health import OK, readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The database or the broker is unreachable"}})
async def readyz(settings: SettingsDep) -> JSONResponse:
    """The database and the broker are reachable."""
    parts = await readiness(settings)
    failing = {name: state for name, state in parts.items() if state != OK}
    if not failing:
        return JSONResponse({"status": "ready", **parts})
    message = "; ".join(f"{name} {state}" for name, state in failing.items())
    body = error_body(f"Not ready: {message}", SERVER_ERROR, "not_ready", next(iter(failing)))
    return JSONResponse({**body, "status": "not_ready", **parts}, status_code=503)
