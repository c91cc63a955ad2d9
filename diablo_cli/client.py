"""An HTTP client of the DiaBlo API for the command line: bearer auth, timeouts, typed errors.

Every non-2xx answer becomes an ``APIRequestError`` built from the OpenAI error envelope; a server that cannot
be reached becomes an ``APIConnectionError`` that says which URL was tried.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# Uploads may be hundreds of MiB and generation on a CPU is slow: no limit on writing or reading those.
LONG_TIMEOUT = httpx.Timeout(None, connect=5.0)
SSE_DONE = "[DONE]"


class APIRequestError(Exception):
    """The API answered with an error: its HTTP ``status`` and the fields of the error envelope."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        param: str | None = None,
        problems: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.problems = problems or []

    @classmethod
    def from_response(cls, response: httpx.Response) -> APIRequestError:
        """Read the error envelope of ``response`` (or describe a body that is not one)."""
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            error = None
        if not isinstance(error, dict):
            text = response.text.strip()[:200] or response.reason_phrase
            return cls(response.status_code, None, f"HTTP {response.status_code}: {text}")
        message = str(error.get("message") or f"HTTP {response.status_code}")
        code, param, problems = error.get("code"), error.get("param"), error.get("problems")
        return cls(response.status_code, code, message, param, problems)


class APIConnectionError(Exception):
    """The API could not be reached (nothing listening, a DNS failure, a timeout)."""

    def __init__(self, base_url: str, detail: str | None = None) -> None:
        message = detail or f"cannot reach the API at {base_url}: is `make run` running?"
        super().__init__(message)
        self.base_url = base_url


def normalize_base_url(base_url: str) -> str:
    """The server root: ``http://host:8000/v1/`` and ``http://host:8000`` both give ``http://host:8000``."""
    return base_url.rstrip("/").removesuffix("/v1").rstrip("/")


class DiabloClient:
    """Calls ``/v1`` routes of the API at ``base_url``, sending ``Authorization: Bearer <api_key>``."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> DiabloClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return its JSON body.

        Raises:
            APIRequestError: The API answered with a non-2xx status.
            APIConnectionError: The API could not be reached.
        """
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc
        if response.is_error:
            raise APIRequestError.from_response(response)
        return response.json()

    def _connection_error(self, exc: httpx.TransportError) -> APIConnectionError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return APIConnectionError(self.base_url)
        return APIConnectionError(self.base_url, f"the API at {self.base_url} did not answer: {exc!r}")

    def upload_file(self, path: Path, purpose: str = "fine-tune") -> dict[str, Any]:
        """``POST /v1/files``: upload ``path`` as multipart form data."""
        with open(path, "rb") as handle:
            files = {"file": (path.name, handle, "application/jsonl")}
            form = {"purpose": purpose}
            return self.request("POST", "/v1/files", files=files, data=form, timeout=LONG_TIMEOUT)

    def list_files(self, purpose: str | None = None) -> dict[str, Any]:
        """``GET /v1/files``."""
        return self.request("GET", "/v1/files", params={"purpose": purpose} if purpose else None)

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """``DELETE /v1/files/{id}``."""
        return self.request("DELETE", f"/v1/files/{quote(file_id, safe='')}")

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/fine_tuning/jobs``."""
        return self.request("POST", "/v1/fine_tuning/jobs", json=body)

    def estimate_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/fine_tuning/jobs/estimate``: the job ``body`` would create, estimated, not created."""
        return self.request("POST", "/v1/fine_tuning/jobs/estimate", json=body)

    def list_jobs(self, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        """``GET /v1/fine_tuning/jobs``, newest first."""
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return self.request("GET", "/v1/fine_tuning/jobs", params=params)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/fine_tuning/jobs/{id}``."""
        return self.request("GET", f"/v1/fine_tuning/jobs/{quote(job_id, safe='')}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """``POST /v1/fine_tuning/jobs/{id}/cancel``."""
        return self.request("POST", f"/v1/fine_tuning/jobs/{quote(job_id, safe='')}/cancel")

    def pause_job(self, job_id: str) -> dict[str, Any]:
        """``POST /v1/fine_tuning/jobs/{id}/pause``."""
        return self.request("POST", f"/v1/fine_tuning/jobs/{quote(job_id, safe='')}/pause")

    def resume_job(self, job_id: str) -> dict[str, Any]:
        """``POST /v1/fine_tuning/jobs/{id}/resume``."""
        return self.request("POST", f"/v1/fine_tuning/jobs/{quote(job_id, safe='')}/resume")

    def list_events(self, job_id: str, limit: int = 100, after: str | None = None) -> dict[str, Any]:
        """``GET /v1/fine_tuning/jobs/{id}/events``, newest first (``after``: older than that event)."""
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return self.request("GET", f"/v1/fine_tuning/jobs/{quote(job_id, safe='')}/events", params=params)

    def list_models(self) -> dict[str, Any]:
        """``GET /v1/models``."""
        return self.request("GET", "/v1/models")

    def delete_model(self, model_id: str) -> dict[str, Any]:
        """``DELETE /v1/models/{id}``; ids keep their ``/`` and ``:`` (the route takes a path)."""
        return self.request("DELETE", f"/v1/models/{quote(model_id, safe='/:')}")

    def create_evaluation(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/evaluations``: a model's greedy answers to a file's examples, scored (slow)."""
        return self.request("POST", "/v1/evaluations", json=body, timeout=LONG_TIMEOUT)

    def get_file(self, file_id: str) -> dict[str, Any]:
        """``GET /v1/files/{id}``."""
        return self.request("GET", f"/v1/files/{quote(file_id, safe='')}")

    def list_checkpoints(self, job_id: str, limit: int = 100) -> dict[str, Any]:
        """``GET /v1/fine_tuning/jobs/{id}/checkpoints``, newest first."""
        path = f"/v1/fine_tuning/jobs/{quote(job_id, safe='')}/checkpoints"
        return self.request("GET", path, params={"limit": limit})

    @contextmanager
    def download(self, path: str, params: dict[str, Any] | None = None) -> Iterator[httpx.Response]:
        """``GET path`` as a stream, for bodies too large to hold (``iter_bytes`` reads it in pieces).

        Raises:
            APIRequestError: The API answered with an error.
            APIConnectionError: The API could not be reached or the transfer broke off.
        """
        try:
            with self._http.stream("GET", path, params=params, timeout=LONG_TIMEOUT) as response:
                if response.is_error:
                    response.read()
                    raise APIRequestError.from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc

    def stream_chat(self, body: dict[str, Any]) -> Iterator[str]:
        """``POST /v1/chat/completions`` with ``stream: true``; yields the answer's text as it arrives.

        Raises:
            APIRequestError: The API refused the request, or sent an error in the stream.
            APIConnectionError: The API could not be reached or the stream broke off.
        """
        try:
            with self._http.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}, timeout=LONG_TIMEOUT
            ) as response:
                if response.is_error:
                    response.read()
                    raise APIRequestError.from_response(response)
                yield from _sse_contents(response.iter_lines())
        except httpx.TransportError as exc:
            raise self._connection_error(exc) from exc


def _sse_contents(lines: Iterator[str]) -> Iterator[str]:
    """The ``delta.content`` of each ``data:`` chunk of a chat completion stream, until ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, comments and other SSE fields
        payload = line.removeprefix("data:").strip()
        if payload == SSE_DONE:
            return
        try:
            chunk = json.loads(payload)
        except ValueError as exc:
            message = f"the stream sent invalid JSON: {payload[:200]}"
            raise APIRequestError(502, "invalid_stream", message) from exc
        if isinstance(chunk.get("error"), dict):
            error = chunk["error"]
            raise APIRequestError(500, error.get("code"), str(error.get("message")), error.get("param"))
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                yield content
