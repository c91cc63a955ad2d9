"""The error object of a job or an API answer: ``{"message", "param", "code"}``, built in one place.

A failed job stores one (``registry.jobs.transition``), the API returns one inside its error envelope
(``api.errors.error_body`` adds ``type``), and the code in it is stable: clients branch on it.
"""

from __future__ import annotations

from typing import Any


def error_object(code: str | None, message: str, param: str | None = None, **extra: Any) -> dict[str, Any]:
    """``{"message", "param", "code"}`` plus any ``extra`` fields (e.g. ``line`` or ``problems``)."""
    return {"message": message, "param": param, "code": code, **extra}
