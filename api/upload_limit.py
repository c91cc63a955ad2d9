"""An ASGI guard that refuses oversized uploads before their body is read.

FastAPI parses a multipart body completely before the handler runs, so the handler alone cannot stop a
huge upload early. This guard answers 413 at once when ``Content-Length`` announces too much, and stops
reading a body (chunked or lying about its length) as soon as it grows past the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Scope

from api.body_limit import BodyLimit, posts_to
from api.errors import APIError

# Room for the multipart boundaries, part headers and the small form fields around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


class UploadSizeLimit(BodyLimit):
    """Limit the request bodies of ``POST <path>`` to ``max_bytes`` plus the multipart overhead."""

    def __init__(self, app: ASGIApp, *, path: str, max_bytes: int) -> None:
        super().__init__(app, limit=max_bytes + MULTIPART_OVERHEAD)
        self.path = path
        self.max_bytes = max_bytes

    def guards(self, scope: Scope) -> bool:
        return posts_to(scope, self.path)

    def too_large(self) -> APIError:
        message = f"File is too large: the limit is {self.max_bytes} bytes"
        return APIError(413, message, code="file_too_large", param="file")
