"""One request inside the decode batch: its prompt, adapter slot, sampler, stop matcher and text so far.

The text rules (end-of-sequence, stop cut, held-back partial characters and stop prefixes, token counts)
are those of ``diablo_core.generation.decoding``. A row that fails ends alone with its own error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from diablo_core.generation.result import GenerationResult
from diablo_core.generation.stop_strings import StopMatcher
from diablo_core.serving.handle import RequestHandle


@dataclass(eq=False)
class Row:
    """One request inside the batch: its prompt, adapter slot, sampler and the text produced so far."""

    handle: RequestHandle
    prompt_ids: list[int]
    slot: int
    adapter_key: str | None
    eos_ids: set[int]
    tokenizer: Any = field(repr=False)
    generator: torch.Generator | None = None
    completion: list[int] = field(default_factory=list)
    text: str = ""
    emitted: str = ""
    finish_reason: str | None = None
    stops: StopMatcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.handle.request.stop)

    @property
    def tenant(self) -> str | None:
        return self.handle.request.tenant

    def accept(self, token: int) -> None:
        """Appends a generated token; publishes the new visible text and, when the row ends, its result."""
        self.completion.append(token)
        if token in self.eos_ids:
            self.finish("stop")
            return
        self.text = self.tokenizer.decode(self.completion, skip_special_tokens=True)
        cut = self.stops.update(self.text)
        if cut is not None:
            self.text = self.text[:cut]
            self.finish("stop")
            return
        delta = self.stops.safe_delta(self.text, self.emitted)
        if delta:
            self.emitted += delta
            self.handle.push(delta)
        if len(self.completion) >= self.handle.request.max_tokens:
            self.finish("length")

    def finish(self, reason: str) -> None:
        """Publishes the remaining text and the result."""
        self.finish_reason = reason
        if self.text.startswith(self.emitted) and len(self.text) > len(self.emitted):
            self.handle.push(self.text[len(self.emitted) :])
        self.handle.finish(GenerationResult(self.text, len(self.prompt_ids), len(self.completion), reason))

    def fail(self, error: BaseException) -> None:
        """Ends this row alone with ``error`` (the batch drops it at its next removal)."""
        self.finish_reason = "error"
        with contextlib.suppress(Exception):
            self.handle.fail(error)

    def guarded(self, action: Callable[..., object], *args: Any) -> None:
        """Runs ``action(*args)`` on this row's behalf; an exception ends this row only."""
        try:
            action(*args)
        except Exception as error:
            self.fail(error)
