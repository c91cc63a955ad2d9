"""What a caller submits to the inference engine and the handle it gets back.

The engine thread publishes text deltas, then a result or an error, into the handle; callers consume them
from threads (blocking iteration, :meth:`RequestHandle.result`) or from asyncio code (``async for``,
:meth:`RequestHandle.aresult`), where the engine wakes the waiting task with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from diablo_core.generation.result import GenerationResult
from diablo_core.serving.adapter_ref import AdapterRef

_request_ids = itertools.count(1)


@dataclass(frozen=True)
class GenerationRequest:
    """One completion request.

    Attributes:
        adapter: The adapter to use, or None for the base model.
        messages: Chat messages (rendered with the chat template); exclusive with ``prompt``.
        prompt: Plain text prompt.
        max_tokens: Most tokens to generate (``finish_reason="length"`` when reached).
        temperature: 0 is greedy; above 0 samples.
        top_p: Nucleus sampling mass in (0, 1].
        stop: Strings that end the completion; the text is cut before the first one.
        seed: Seed of this request's own sampling generator (repeatable samples, whatever the batch).
        tenant: Who asks (the project id; None is one shared tenant): admission is fair across tenants.
    """

    adapter: AdapterRef | None = None
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    tenant: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of messages and prompt")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 0:
            raise ValueError(f"max_tokens must be a non-negative integer, got {self.max_tokens!r}")
        if not 0 <= self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class RequestHandle:
    """The running request: iterate it for text deltas, or wait for its :class:`GenerationResult`.

    Iterating (sync or async) yields every delta from the start, so a consumer may begin late; the deltas
    concatenate to the final text. A failed request raises its error (e.g. an ``AdapterError``) from the
    iteration and from ``result``.
    """

    def __init__(self, request: GenerationRequest, on_cancel: Callable[[], None] | None = None) -> None:
        self.id = next(_request_ids)
        self.request = request
        self.admission_index: int | None = None  # the engine's count of admissions when this one started
        self._on_cancel = on_cancel
        self._deltas: list[str] = []
        self._result: GenerationResult | None = None
        self._error: BaseException | None = None
        self._cancelled = False
        self._condition = threading.Condition()
        self._waiters: list[_Waiter] = []

    @property
    def done(self) -> bool:
        """Whether a result or an error has been published."""
        return self._result is not None or self._error is not None

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called (the engine then drops the request at its next step)."""
        return self._cancelled

    def cancel(self) -> None:
        """Asks the engine to stop this request (e.g. the client went away); it ends with ``"cancelled"``."""
        self._cancelled = True
        if self._on_cancel is not None:
            self._on_cancel()  # wakes the engine, so that the row is freed within one step

    def result(self, timeout: float | None = None) -> GenerationResult:
        """Blocks until the request ends and returns its result (raises its error; TimeoutError)."""
        with self._condition:
            if not self._condition.wait_for(lambda: self.done, timeout):
                raise TimeoutError(f"request {self.id} did not finish within {timeout} s")
        return self._final()

    def __iter__(self) -> Iterator[str]:
        index = 0
        while True:
            with self._condition:
                self._condition.wait_for(partial(self._has_news, index))
                pending, finished = self._deltas[index:], self.done
            index += len(pending)
            yield from pending
            if finished and index == len(self._deltas):
                self._final()
                return

    def _has_news(self, seen: int) -> bool:
        return len(self._deltas) > seen or self.done

    async def aresult(self) -> GenerationResult:
        """Awaits the end of the request without blocking the event loop."""
        while not self.done:
            await self._wait_async(len(self._deltas))
        return self._final()

    async def __aiter__(self) -> AsyncIterator[str]:
        index = 0
        while True:
            while index < len(self._deltas):
                index += 1
                yield self._deltas[index - 1]
            if self.done and index == len(self._deltas):
                self._final()
                return
            await self._wait_async(index)

    async def _wait_async(self, seen: int) -> None:
        """Sleeps until a delta beyond ``seen`` arrives or the request ends."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._condition:
            if self._has_news(seen):
                return

            self._waiters.append(_Waiter(loop, future))
        await future

    def _final(self) -> GenerationResult:
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _publish(self, delta: str | None = None, result: GenerationResult | None = None, error=None) -> None:
        """Engine side: appends a delta and/or ends the request, waking every waiter."""
        with self._condition:
            if self.done:
                return
            if delta:
                self._deltas.append(delta)
            self._result, self._error = result, error
            waiters, self._waiters = self._waiters, []
            self._condition.notify_all()
        for waiter in waiters:
            with contextlib.suppress(RuntimeError):  # the waiter's event loop closed: nobody to wake
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)

    def push(self, delta: str) -> None:
        """Engine side: publishes a text delta."""
        self._publish(delta=delta)

    def finish(self, result: GenerationResult) -> None:
        """Engine side: publishes the result."""
        self._publish(result=result)

    def fail(self, error: BaseException) -> None:
        """Engine side: publishes an error."""
        self._publish(error=error)
