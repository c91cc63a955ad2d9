"""An ASGI guard that bounds every request body but uploads (which ``api.upload_limit`` bounds).

A JSON body is parsed whole before a handler sees it, so one 20 MB list costs memory and time at once.
This answers 413 ``request_too_large`` when ``Content-Length`` announces more than the limit, and stops
reading a body (chunked, or lying about its length) as soon as it grows past it.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import APIError
from api.upload_limit import limit_body

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
        await limit_body(self.app, scope, receive, send, self.max_bytes, self._too_large)
