"""InferenceEngine: one shared base model serving the base and many DiaBlo adapters, batched.

A background thread runs continuous batching: at every decode step it admits waiting requests (up to
``max_batch_size`` rows), prefills them together, then decodes one token for every row; finished rows leave
at once, so a long request never holds back a short one. Rows of one batch may use different adapters (or
none): each row gets its own blocks through :class:`MultiAdapterModel`, and no weight is ever changed.

Adapters are read from disk on a loader thread (checksum, base identity, shapes) while the batch keeps
decoding, then installed into a cache slot between steps. With ``merged_adapter`` the engine instead merges
one adapter into the weights at start (zero overhead) and refuses every other request.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from torch import nn

from diablo_core.errors import AdapterError, DiaBloError
from diablo_core.generation import GenerationResult, _eos_ids, build_prompt_ids
from diablo_core.identity import BaseModelIdentity, model_identity
from diablo_core.serving.adapter_cache import (
    DEFAULT_MAX_ADAPTERS,
    DEFAULT_MAX_BYTES,
    AdapterCache,
    AdapterRef,
)
from diablo_core.serving.batch import DecodeBatch, Row, new_generator
from diablo_core.serving.handle import GenerationRequest, RequestHandle
from diablo_core.serving.multi_adapter import MultiAdapterModel, merge_blocks


class EngineClosedError(DiaBloError):
    """The engine is closed (or closing) and takes no more requests."""

    default_code = "engine_closed"


@dataclass
class EngineStats:
    """Counters of the engine thread (read them for monitoring and benchmarks)."""

    prefills: int = 0
    decode_steps: int = 0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    peak_batch_size: int = 0


@dataclass
class _Waiting:
    handle: RequestHandle
    prompt_ids: list[int]


class InferenceEngine:
    """Serves generation requests for a base model and its adapters from one background thread.

    Args:
        model: The base model, used by this engine only (adapted layers are wrapped in place; in merged
            mode one adapter is added into its weights).
        tokenizer: Its tokenizer.
        identity: The base model's identity; computed from the weights when not given.
        max_batch_size: Most rows decoded together.
        max_adapters: Most adapters resident in the cache.
        max_adapter_bytes: Most bytes of resident adapter blocks.
        merged_adapter: Serve only this adapter, merged into the weights.
        batch_window_s: When idle, how long to wait after a first request for others to batch with it.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        identity: BaseModelIdentity | None = None,
        max_batch_size: int = 8,
        max_adapters: int = DEFAULT_MAX_ADAPTERS,
        max_adapter_bytes: int = DEFAULT_MAX_BYTES,
        merged_adapter: AdapterRef | None = None,
        batch_window_s: float = 0.002,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
        self.tokenizer, self.max_batch_size, self.batch_window_s = tokenizer, max_batch_size, batch_window_s
        self.identity = identity or model_identity(model)
        self.adapters = MultiAdapterModel(model.eval())
        self.cache = AdapterCache(self.adapters, self.identity, max_adapters, max_adapter_bytes)
        self.merged_adapter = merged_adapter
        if merged_adapter is not None:
            merge_blocks(model, self.cache.read(merged_adapter).blocks)
        self._eos_ids = _eos_ids(model, tokenizer)
        self._batch = DecodeBatch(self.adapters)
        self.stats = EngineStats()
        self._waiting: deque[_Waiting] = deque()
        self._loads: dict[str, Future] = {}
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="diablo-adapter-loader")
        self._condition = threading.Condition()
        self._encode_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="diablo-inference", daemon=True)
        self._thread.start()

    def __enter__(self) -> InferenceEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stops the engine: waiting and running requests fail with ``EngineClosedError``."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(timeout)
        self._loader.shutdown(wait=False, cancel_futures=True)

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Queues a request and returns its handle at once (the prompt is tokenized here).

        Raises:
            AdapterError: ``adapter_not_served`` in merged mode for any other adapter or the base model.
            EngineClosedError: After :meth:`close`.
            ValueError: An empty prompt.
        """
        self._check_served(request.adapter)
        with self._encode_lock:
            prompt_ids = build_prompt_ids(self.tokenizer, request.messages, request.prompt)
        if not prompt_ids:
            raise ValueError("the prompt is empty: give at least one token of text")
        handle = RequestHandle(request)
        if request.max_tokens == 0:
            handle.finish(GenerationResult("", len(prompt_ids), 0, "length"))
            return handle
        with self._condition:
            if self._closed:
                raise EngineClosedError("the inference engine is closed")
            self._waiting.append(_Waiting(handle, prompt_ids))
            self._start_load(request.adapter)
            self._condition.notify_all()
        return handle

    def generate(self, request: GenerationRequest, timeout: float | None = None) -> GenerationResult:
        """Submits a request and blocks until its result."""
        return self.submit(request).result(timeout)

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        """Submits a request and awaits its result without blocking the event loop."""
        return await self.submit(request).aresult()

    def _check_served(self, adapter: AdapterRef | None) -> None:
        merged = self.merged_adapter
        if merged is not None and (adapter is None or adapter.sha256 != merged.sha256):
            asked = "the base model" if adapter is None else f"adapter {adapter.sha256}"
            raise AdapterError(
                f"this engine serves only adapter {merged.sha256} (merged into the weights), not {asked}",
                "adapter_not_served",
            )

    def _start_load(self, adapter: AdapterRef | None) -> None:
        """Starts reading an adapter that is neither resident nor loading (caller holds the condition)."""
        if adapter is None or self.merged_adapter is not None or adapter.sha256 in self.cache:
            return
        if adapter.sha256 not in self._loads:
            future = self._loader.submit(self.cache.read, adapter)
            future.add_done_callback(lambda _: self._notify())
            self._loads[adapter.sha256] = future

    def _notify(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def _run(self) -> None:
        while self._wait_for_work():
            try:
                self._step()
            except Exception as error:  # a failed forward ends the rows it touched, not the engine
                self._fail_batch(error)
        self._fail_batch(EngineClosedError("the inference engine was closed before the request finished"))
        with self._condition:
            waiting, self._waiting = list(self._waiting), deque()
        for item in waiting:
            item.handle.fail(EngineClosedError("the inference engine was closed before the request started"))

    def _wait_for_work(self) -> bool:
        """Blocks while there is nothing to do; returns False once the engine is closing."""
        idle = not self._batch.rows
        with self._condition:
            self._condition.wait_for(lambda: self._closed or self._batch.rows or self._ready())
            if self._closed:
                return False
        if idle and self.batch_window_s:
            time.sleep(self.batch_window_s)  # let requests arriving together share the first forward
        return True

    def _ready(self) -> bool:
        """Whether some waiting request could be admitted now (caller holds the condition)."""
        for item in self._waiting:
            adapter = item.handle.request.adapter
            if item.handle.cancelled or adapter is None or self.merged_adapter is not None:
                return True
            future = self._loads.get(adapter.sha256)
            if adapter.sha256 in self.cache or (future is not None and future.done()):
                return True
        return False

    def _step(self) -> None:
        for row in self._batch.rows:
            if row.handle.cancelled and row.finish_reason is None:
                row.finish("cancelled")
        self._admit()
        self._release(self._batch.remove_finished())
        if self._batch.rows:
            started = time.perf_counter()
            self._batch.step()
            self.stats.decode_seconds += time.perf_counter() - started
            self.stats.decode_steps += 1
            self.stats.decode_tokens += len(self._batch)
            self._release(self._batch.remove_finished())

    def _admit(self) -> None:
        """Prefills waiting requests whose adapters are ready, up to the batch bound, in arrival order."""
        rows: list[Row] = []
        with self._condition:
            candidates = list(self._waiting)
        for item in candidates:
            if len(self._batch) + len(rows) >= self.max_batch_size:
                break
            try:
                row = self._row_for(item)
            except Exception as error:  # e.g. an AdapterError: it ends this request only
                self._dequeue(item)
                item.handle.fail(error)
                continue
            if row is not None:
                self._dequeue(item)
                rows.append(row)
        if rows:
            try:
                prefill = self._batch.prefill(rows)
            except Exception as error:  # e.g. out of memory on long prompts: the running rows go on
                self._release(rows)
                for row in rows:
                    row.handle.fail(error)
                return
            self._batch.join(prefill)
            self.stats.prefills += 1
            self.stats.peak_batch_size = max(self.stats.peak_batch_size, len(self._batch))

    def _row_for(self, item: _Waiting) -> Row | None:
        """A batch row for ``item``, or None while its adapter is loading or no cache slot is free."""
        handle = item.handle
        if handle.cancelled:
            self._dequeue(item)
            handle.finish(GenerationResult("", len(item.prompt_ids), 0, "cancelled"))
            return None
        slot, key = self._slot_for(handle.request.adapter)
        if slot is None:
            return None
        request = handle.request
        generator = new_generator(self._batch.device, request.seed, request.temperature)
        return Row(handle, item.prompt_ids, slot, key, self._eos_ids, self.tokenizer, generator)

    def _slot_for(self, adapter: AdapterRef | None) -> tuple[int | None, str | None]:
        """The pinned slot of ``adapter`` (0 for the base or the merged adapter) and its cache key."""
        if adapter is None or self.merged_adapter is not None:
            return 0, None
        slot = self.cache.acquire(adapter.sha256)
        if slot is None:
            future = self._loads.get(adapter.sha256)
            if future is None or not future.done():
                with self._condition:
                    self._start_load(adapter)
                return None, None
            try:
                slot = self.cache.insert(future.result())
            except Exception:  # a failed read is retried from disk by the next request for it
                self._loads.pop(adapter.sha256, None)
                raise
            if slot is not None:
                self._loads.pop(adapter.sha256, None)
        return slot, adapter.sha256

    def _dequeue(self, item: _Waiting) -> None:
        with self._condition:
            self._waiting.remove(item)

    def _release(self, rows: list[Row]) -> None:
        for row in rows:
            if row.adapter_key is not None:
                self.cache.release(row.adapter_key)

    def _fail_batch(self, error: BaseException) -> None:
        rows = self._batch.rows
        self._batch = DecodeBatch(self.adapters)
        for row in rows:
            row.handle.fail(error)
        self._release(rows)
