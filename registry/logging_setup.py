"""Structured logs for the API and the workers: one JSON object per line, carrying request and job ids.

The ids live in context variables, so every log call made while handling a request (``api.middleware``) or
running a job (``worker.tasks``) carries them without passing them around. ``configure_logging`` installs
one handler on the root logger; libraries that log through their own handlers (uvicorn) are routed to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]

request_id_var: ContextVar[str | None] = ContextVar("diablo_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("diablo_job_id", default=None)

CONTEXT_FIELDS = ("request_id", "job_id")
# uvicorn's own loggers, which it gives their own handlers; ours replace them. Its access log is replaced by
# the one api.middleware writes (with the route template, the request id and the duration).
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")
_UVICORN_ACCESS = "uvicorn.access"
# The attributes every LogRecord has; anything else on a record came in through ``extra=`` and is logged.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", *CONTEXT_FIELDS}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [request_id=%(request_id)s job_id=%(job_id)s] %(message)s"


@contextlib.contextmanager
def log_context(*, request_id: str | None = None, job_id: str | None = None) -> Iterator[None]:
    """Bind ``request_id`` and/or ``job_id`` (those given) to every log record made inside the block."""
    tokens = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    if job_id is not None:
        tokens.append((job_id_var, job_id_var.set(job_id)))
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound request and job ids onto each record (None where unbound)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # An id given explicitly (``extra={"job_id": ...}``) wins over the bound one.
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, request_id, job_id, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "job_id": getattr(record, "job_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (test harnesses swap it)."""

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter for ``log_format``: ``"json"`` (one object per line) or ``"text"`` (for people).

    Raises:
        ValueError: If ``log_format`` is neither.
    """
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log_format must be 'json' or 'text', not {log_format!r}")


def configure_logging(
    log_format: LogFormat = "json", level: int | str = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to ``stream`` (default: stderr) in ``log_format``; safe to call again.

    A handler installed by an earlier call is replaced; handlers others installed on the root logger (e.g.
    pytest's) are kept.

    Returns:
        The handler installed on the root logger.
    """
    handler: logging.Handler = StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(ContextFilter())
    handler.set_name("diablo")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "diablo"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _UVICORN_LOGGERS:
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    access = logging.getLogger(_UVICORN_ACCESS)
    access.handlers[:] = [logging.NullHandler()]
    access.propagate = False
    return handler
