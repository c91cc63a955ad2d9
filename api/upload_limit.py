"""An ASGI guard that refuses oversized uploads before their body is read.

FastAPI parses a multipart body completely before the handler runs, so the handler alone cannot stop a
huge upload early. This guard answers 413 at once when ``Content-Length`` announces too much, and stops
reading a body (chunked or lying about its length) as soon as it grows past the limit.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import APIError, error_body

# Room for the multipart boundaries, part headers and the small form fields around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


class UploadSizeLimit:
    """Limit the request bodies of ``POST <path>`` to ``max_bytes`` plus the multipart overhead."""

    def __init__(self, app: ASGIApp, *, path: str, max_bytes: int) -> None:
        self.app = app
        self.path = path
        self.max_bytes = max_bytes

    def _too_large(self) -> APIError:
        message = f"File is too large: the limit is {self.max_bytes} bytes"
        return APIError(413, message, code="file_too_large", param="file")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path:
            await self.app(scope, receive, send)
            return
        await limit_body(self.app, scope, receive, send, self.max_bytes + MULTIPART_OVERHEAD, self._too_large)


async def limit_body(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int, too_large: Callable[[], APIError]
) -> None:
    """Run ``app`` with its body bounded by ``limit``: 413 at once for a larger declared ``Content-Length``,
    and ``too_large()`` raised as soon as a chunked or understated body grows past it."""
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        error = too_large()
        body = error_body(error.message, error.type, error.code, error.param)
        await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)
        return
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b"")) if message["type"] == "http.request" else 0
        if received > limit:
            raise too_large()
        return message

    await app(scope, limited_receive, send)
