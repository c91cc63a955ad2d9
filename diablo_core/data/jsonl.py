"""Reading untrusted JSONL bytes in linear time: lines, bounded nesting, and short echoes of user text.

Every step here costs time proportional to the input, whatever its shape: one huge line, a million tiny
ones, or brackets nested far deeper than any dataset needs (Python's parser would otherwise recurse until
``RecursionError``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CHUNK_SIZE = 1 << 16
# Echoed user text (key names, roles) is cut to this many characters, so an answer stays small.
FRAGMENT_CHARS = 64
ELLIPSIS = "…"

Source = str | Path | bytes | Iterable[bytes]

# A JSON string, escapes included (written unrolled so the regex engine never backtracks).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))  # translate deletes before it maps


class TooDeepError(ValueError):
    """A JSON value nests arrays and objects deeper than allowed."""


def shorten(text: str, limit: int = FRAGMENT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when something was cut."""
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


def read_lines(source: Source) -> Iterator[bytes]:
    """Split a source into lines (without line endings), reading files in chunks."""
    if isinstance(source, str | Path):
        with open(source, "rb") as file:
            yield from split_chunks(iter(lambda: file.read(CHUNK_SIZE), b""))
    elif isinstance(source, bytes | bytearray):
        yield from split_chunks([bytes(source)])
    else:
        yield from split_chunks(source)


def split_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Re-split byte chunks at newlines, stripping ``\\n`` and ``\\r\\n``.

    Only the newest chunk is searched for newlines and a long line grows in one ``bytearray``, so the work is
    linear in the input however long its lines are (``pending += chunk`` on bytes copied it per chunk).
    """
    pending = bytearray()
    for chunk in chunks:
        view, start = memoryview(chunk), 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending += view[start:end]
            yield bytes(pending).removesuffix(b"\r")
            pending.clear()
            start = end + 1
        pending += view[start:]
    if pending:
        yield bytes(pending).removesuffix(b"\r")


def exceeds_depth(raw: bytes, max_depth: int) -> bool:
    """True when the JSON text ``raw`` nests arrays/objects more than ``max_depth`` deep.

    Strings are dropped first (brackets inside them do not count), then every pass deletes the innermost
    ``[]`` pairs, one level each: at most ``max_depth`` passes of C-speed byte operations. Unbalanced
    brackets are left for the parser to report as invalid JSON.
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:  # the common case costs two counts
        return False
    brackets = _STRING.sub(b"", raw).translate(_OPEN_AS_SQUARE, _NOT_BRACKET)
    for _ in range(max_depth):
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return False
        brackets = shorter
    return b"[]" in brackets


def parse_line(raw: bytes, text: str, max_depth: int) -> Any:
    """Parse one line's JSON (``text`` is ``raw`` decoded) with its nesting bounded by ``max_depth``.

    Raises:
        TooDeepError: Nesting deeper than ``max_depth`` (or than the parser's own recursion allows).
        json.JSONDecodeError: Not valid JSON.
    """
    if exceeds_depth(raw, max_depth):
        raise TooDeepError(f"JSON nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError as error:  # unbalanced brackets that the depth check left to the parser
        raise TooDeepError(f"JSON nests deeper than {max_depth} levels") from error
