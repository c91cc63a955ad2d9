"""An ASGI guard that bounds every request body but uploads (which ``api.upload_limit`` bounds).

A JSON body is parsed whole before a handler sees it, so one 20 MB list costs memory and time at once.
This answers 413 ``request_too_large`` when ``Content-Length`` announces more than the limit, and stops
reading a body (chunked, or lying about its length) as soon as it grows past it.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import APIError, error_body

CODE = "request_too_large"


class BodySizeLimit:
    """Limit request bodies to ``max_bytes``, except ``POST <upload_path>``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, upload_path: str) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_path = upload_path

    def _too_large(self) -> APIError:
        message = f"Request body is too large: the limit is {self.max_bytes} bytes"
        return APIError(413, message, code=CODE)

    def _exempt(self, scope: Scope) -> bool:
        if scope["type"] != "http":
            return True
        return scope["method"] == "POST" and scope["path"].rstrip("/") == self.upload_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._exempt(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            error = self._too_large()
            body = error_body(error.message, error.type, error.code, error.param)
            await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if received > self.max_bytes:
                raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)
