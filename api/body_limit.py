"""ASGI guards that bound request bodies: every body but uploads here, uploads in ``api.upload_limit``.

A JSON body is parsed whole before a handler sees it, so one 20 MB list costs memory and time at once.
A guard answers 413 when ``Content-Length`` announces more than its limit, and stops reading a body
(chunked, or lying about its length) as soon as it grows past it.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import APIError, error_body

CODE = "request_too_large"


def posts_to(scope: Scope, path: str) -> bool:
    return scope["method"] == "POST" and scope["path"].rstrip("/") == path


class BodyLimit:
    """Bound the bodies of the HTTP requests that ``guards`` picks to ``limit`` bytes."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    def guards(self, scope: Scope) -> bool:
        return True

    def too_large(self) -> APIError:
        return APIError(413, f"Request body is too large: the limit is {self.limit} bytes", code=CODE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.guards(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            error = self.too_large()
            body = error_body(error.message, error.type, error.code, error.param)
            await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if received > self.limit:
                raise self.too_large()
            return message

        await self.app(scope, limited_receive, send)


class BodySizeLimit(BodyLimit):
    """Limit request bodies to ``max_bytes``, except ``POST <upload_path>``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, upload_path: str) -> None:
        super().__init__(app, limit=max_bytes)
        self.upload_path = upload_path

    def guards(self, scope: Scope) -> bool:
        return not posts_to(scope, self.upload_path)
