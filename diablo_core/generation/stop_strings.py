"""Stop strings in a growing completion, at a cost per step bounded by the new text, not the whole text.

Each decode step appends a little text. A stop that was not in the text before can only end inside the new
piece, so :meth:`StopMatcher.update` searches from ``len(stop) - 1`` characters before it. For streaming,
the matcher also keeps, per stop, every length ``b`` such that the text ends with ``stop[:b]`` (a stop the
next tokens may still complete); extending those by the new piece costs one comparison of the new piece
each, so a step costs O(new text x stop length) at worst and O(new text) in the usual case.
"""

from __future__ import annotations

from collections.abc import Sequence

REPLACEMENT_CHAR = "\ufffd"


class StopMatcher:
    """Finds the first stop string in a text that grows between calls, and what may be shown of it.

    Attributes:
        stops: The non-empty stop strings.
        work: Characters compared so far (tests of scale count it instead of timing).
    """

    def __init__(self, stops: Sequence[str] | None) -> None:
        self.stops = [stop for stop in stops or [] if stop]
        self.work = 0
        self._visible = ""  # the text of the last update without its trailing partial character
        self._partials: list[list[int]] = [[] for _ in self.stops]  # per stop: b with text ending in stop[:b]

    def update(self, text: str) -> int | None:
        """Takes the whole text so far; returns where the earliest stop starts in it, if one does."""
        visible = text.rstrip(REPLACEMENT_CHAR)
        extends = visible.startswith(self._visible)  # decoding more tokens only appends, in practice
        start = len(self._visible) if extends else 0
        found = [index for index in (self._find(text, stop, start) for stop in self.stops) if index >= 0]
        if found:
            return min(found)
        new = visible[start:]
        self._partials = [
            self._extend(stop, partials if extends else [], new)
            for stop, partials in zip(self.stops, self._partials, strict=True)
        ]
        self._visible = visible
        return None

    @property
    def held(self) -> int:
        """Length of the longest end of the text that is a proper beginning of some stop."""
        return max((partials[-1] for partials in self._partials if partials), default=0)

    def safe_delta(self, text: str, emitted: str) -> str:
        """New text that can be shown: no partial trailing character, no tail that may begin a stop."""
        if not text.startswith(emitted):
            return ""
        visible = self._visible
        return visible[len(emitted) : len(visible) - self.held]

    def _find(self, text: str, stop: str, start: int) -> int:
        low = max(0, start - len(stop) + 1)  # a new occurrence ends after ``start``
        if len(text) - low >= len(stop):  # str.find answers at once when the stop is longer
            self.work += len(text) - low
        return text.find(stop, low)

    def _extend(self, stop: str, partials: list[int], new: str) -> list[int]:
        """The lengths ``b`` (ascending) with ``text + new`` ending in ``stop[:b]``, ``0 < b < len(stop)``."""
        size = len(new)
        if not size:
            return partials
        self.work += size * len(partials)
        longer = [b + size for b in partials if b + size < len(stop) and stop.startswith(new, b)]
        fresh = []  # beginnings of the stop that start inside the new text
        for length in range(1, min(size, len(stop) - 1) + 1):
            self.work += length
            if new.endswith(stop[:length]):
                fresh.append(length)
        return fresh + longer
