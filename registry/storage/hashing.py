"""The sha256 of a stored file (an upload, an adapter's or a checkpoint's weights), read in chunks."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

HASH_CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def cached_file_sha256(path: Path) -> str:
    """``file_sha256``, memoized by path, size and mtime: a file rewritten since is hashed again."""
    stat = path.stat()
    return _cached(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=1024)
def _cached(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only
    return file_sha256(Path(path))
