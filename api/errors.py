"""OpenAI-shaped errors: every non-2xx answer is ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from diablo_core.data.jsonl import shorten
from registry.errors import error_object

logger = logging.getLogger("api")

INVALID_REQUEST = "invalid_request_error"
NOT_FOUND = "not_found_error"
AUTHENTICATION_ERROR = "authentication_error"
RATE_LIMIT = "rate_limit_exceeded"
SERVER_ERROR = "server_error"
# The first element of a request-validation location names where the value came from, not the field.
_LOCATION_ROOTS = {"body", "query", "path", "header", "cookie"}
# Messages and params may quote what the client sent (a field name, a value, a parser's remark): cut so that
# no answer, whatever raised it, grows with the request.
MAX_MESSAGE_CHARS = 2048
MAX_PARAM_CHARS = 256


class APIError(HTTPException):
    """An error answered to the client with ``status`` and the OpenAI error envelope.

    ``extra`` holds fields added beside the four standard ones inside ``error`` (e.g. ``problems``);
    ``headers`` are answered with it (e.g. ``Retry-After``). It is an
    ``HTTPException`` so that FastAPI lets it through when raised while the request body is read.
    """

    def __init__(
        self,
        status: int,
        message: str,
        type: str = INVALID_REQUEST,
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra or {}


def error_body(
    message: str, type: str, code: str | None = None, param: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The error envelope, its message and param cut to ``MAX_MESSAGE_CHARS`` and ``MAX_PARAM_CHARS``."""
    message = shorten(message, MAX_MESSAGE_CHARS)
    param = None if param is None else shorten(param, MAX_PARAM_CHARS)
    return {"error": {"message": message, "type": type, **error_object(code, message, param, **extra)}}


def not_found(kind: str, object_id: str, code: str = "not_found", param: str | None = None) -> APIError:
    """A 404 naming the missing object, e.g. ``No fine-tuning job found with id 'ftjob-x'``."""
    return APIError(404, f"No {kind} found with id '{object_id}'", NOT_FOUND, code, param)


def param_from_location(location: Sequence[str | int]) -> str | None:
    """``("body", "hyperparameters", "n_epochs")`` -> ``"hyperparameters.n_epochs"``."""
    parts = list(location)
    if parts and parts[0] in _LOCATION_ROOTS:
        parts = parts[1:]
    return ".".join(str(part) for part in parts) or None


def _validation_message(error: dict[str, Any], param: str | None) -> str:
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{param}: {message}" if param else message


async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
    body = error_body(exc.message, exc.type, exc.code, exc.param, **exc.extra)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else ""
    message = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    if exc.status_code == 404:
        body = error_body(message or "Not found: no such route", NOT_FOUND, "not_found")
    elif exc.status_code == 405:
        message = message or "Method not allowed on this route"
        body = error_body(message, INVALID_REQUEST, "method_not_allowed")
    else:
        kind = SERVER_ERROR if exc.status_code >= 500 else INVALID_REQUEST
        body = error_body(message or phrase or "HTTP error", kind, phrase.lower().replace(" ", "_") or None)
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return JSONResponse(error_body(f"Invalid JSON body: {detail}", INVALID_REQUEST, "invalid_json"), 400)
    param = param_from_location(first.get("loc", ()))
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
    message = "; ".join(_validation_message(e, param_from_location(e.get("loc", ()))) for e in errors[:5])
    return JSONResponse(error_body(message or "invalid request", INVALID_REQUEST, code, param), 400)


async def _data_error(request: Request, exc: DataError) -> JSONResponse:
    # The database refused a value from the request (a NUL character in an id, a string too long for its
    # column): the request is at fault, and the SQL stays in the logs.
    logger.info("database refused a value on %s %s: %s", request.method, request.url.path, exc.orig)
    reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
    message = f"A value in the request cannot be stored or looked up: {reason}"
    return JSONResponse(error_body(message, INVALID_REQUEST, "invalid_value"), 400)


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = error_body("The server had an error while processing your request", SERVER_ERROR, "internal_error")
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app answers use the OpenAI envelope."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(Exception, _unhandled_error)
