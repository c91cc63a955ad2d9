"""InferenceEngine: one shared base model serving the base and many DiaBlo adapters, batched.

A background thread runs continuous batching. Every step it drops cancelled requests, admits waiting ones
(round robin over tenants, up to ``max_batch_size`` rows), runs one prefill chunk of each admitted prompt,
then decodes one token for every running row; finished rows leave at once, so a long request never holds
back a short one, and a long prompt never stalls the rows already decoding. Rows of one batch may use
different adapters (or none): each row gets its own blocks through :class:`MultiAdapterModel`, and no
weight is ever changed. A failure that belongs to one row ends that row alone.

Adapters are read from disk on a loader thread while the batch keeps decoding, then installed into a cache
slot between steps. With ``merged_adapter`` the engine instead merges one adapter into the weights at
start (zero overhead) and refuses every other request.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from torch import nn

from diablo_core.generation.decoding import build_prompt_ids, eos_token_ids, sampling_generator
from diablo_core.generation.result import GenerationResult
from diablo_core.models.identity import BaseModelIdentity, model_identity
from diablo_core.precision.hardware import apply_torch_threads
from diablo_core.serving.adapter_cache import (
    DEFAULT_MAX_ADAPTERS,
    DEFAULT_MAX_BYTES,
    AdapterCache,
    AdapterRef,
)
from diablo_core.serving.adapter_slots import AdapterSlots
from diablo_core.serving.admission import AdmissionQueue, TurnoverClock, Waiting
from diablo_core.serving.batch import DecodeBatch, sample
from diablo_core.serving.errors import ContextLengthError, EngineClosedError
from diablo_core.serving.handle import GenerationRequest, RequestHandle
from diablo_core.serving.multi_adapter import MultiAdapterModel, merge_blocks
from diablo_core.serving.prefill import PrefillGroup, pack_groups
from diablo_core.serving.row import Row
from diablo_core.serving.stats import EngineStats, model_context_length

__all__ = ["EngineClosedError", "EngineStats", "InferenceEngine"]


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
        context_length: Most prompt + completion tokens; default: the model's and tokenizer's limit.
        max_waiting: Most requests waiting for a row, all tenants together (None: no bound).
        max_waiting_per_tenant: Most requests of one tenant waiting for a row (None: no bound).
        max_rows_per_tenant: Most running rows of one tenant (None: up to ``max_batch_size``).
        prefill_chunk_tokens: Most prompt tokens per prefill forward (None: whole prompts at once).
        torch_threads: torch intra-op threads of the engine thread (0: torch's default); set on that thread,
            since a thread count set elsewhere does not reach a thread that already ran torch ops.
        allow_quantization_mismatch: Serve adapters trained on the same base weights stored with another
            quantization than the served model's (e.g. NF4-trained adapters on a full-precision base).
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
        context_length: int | None = None,
        max_waiting: int | None = None,
        max_waiting_per_tenant: int | None = None,
        max_rows_per_tenant: int | None = None,
        prefill_chunk_tokens: int | None = 256,
        torch_threads: int = 0,
        allow_quantization_mismatch: bool = False,
    ) -> None:
        for name, value in (("max_batch_size", max_batch_size), ("max_rows_per_tenant", max_rows_per_tenant)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if prefill_chunk_tokens is not None and prefill_chunk_tokens < 1:
            raise ValueError(f"prefill_chunk_tokens must be positive or None, got {prefill_chunk_tokens}")
        self.tokenizer, self.max_batch_size, self.batch_window_s = tokenizer, max_batch_size, batch_window_s
        self.max_rows_per_tenant, self.prefill_chunk_tokens = max_rows_per_tenant, prefill_chunk_tokens
        self.context_length = context_length or model_context_length(model, tokenizer)
        self.identity = identity or model_identity(model)
        self.adapters = MultiAdapterModel(model.eval())
        self.cache = AdapterCache(
            self.adapters, self.identity, max_adapters, max_adapter_bytes, allow_quantization_mismatch
        )
        self.merged_adapter = merged_adapter
        if merged_adapter is not None:
            loaded = self.cache.read(merged_adapter)
            merge_blocks(model, loaded.blocks, loaded.low_rank)
        self._slots = AdapterSlots(self.cache, merged_adapter, self._notify)
        self._eos_ids = eos_token_ids(model, tokenizer)
        self._batch = DecodeBatch(self.adapters)
        self._prefills: list[PrefillGroup] = []
        self.stats = EngineStats()
        self._waiting = AdmissionQueue(max_waiting, max_waiting_per_tenant)
        self._turnover = TurnoverClock()
        self._condition = threading.Condition()
        self._encode_lock = threading.Lock()
        self._closed = False
        self._torch_threads = torch_threads
        self.torch_threads = 0  # what the engine thread uses, once it runs
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
        self._slots.shutdown()

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Queues a request and returns its handle at once (the prompt is tokenized here).

        Raises:
            AdapterError: ``adapter_not_served`` in merged mode for any other adapter or the base model.
            ContextLengthError: The prompt plus ``max_tokens`` exceed :attr:`context_length`.
            EngineBusyError: ``engine_overloaded`` or ``tenant_queue_full`` when the waiting queue is full.
            EngineClosedError: After :meth:`close`.
            ValueError: An empty prompt.
        """
        self._slots.check_served(request.adapter)
        with self._encode_lock:
            prompt_ids = build_prompt_ids(self.tokenizer, request.messages, request.prompt)
        if not prompt_ids:
            raise ValueError("the prompt is empty: give at least one token of text")
        limit = self.context_length
        if limit is not None and len(prompt_ids) + request.max_tokens > limit:
            raise ContextLengthError(len(prompt_ids), request.max_tokens, limit)
        handle = RequestHandle(request, on_cancel=self._notify)
        if request.max_tokens == 0:
            handle.finish(GenerationResult("", len(prompt_ids), 0, "length"))
            return handle
        with self._condition:
            if self._closed:
                raise EngineClosedError("the inference engine is closed")
            self._waiting.put(Waiting(handle, prompt_ids), self._turnover)
            self._slots.start_load(request.adapter)
            self._condition.notify_all()
        return handle

    def generate(self, request: GenerationRequest, timeout: float | None = None) -> GenerationResult:
        """Submits a request and blocks until its result."""
        return self.submit(request).result(timeout)

    async def agenerate(self, request: GenerationRequest) -> GenerationResult:
        """Submits a request and awaits its result without blocking the event loop."""
        return await self.submit(request).aresult()

    def _notify(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def _run(self) -> None:
        self.torch_threads = apply_torch_threads(self._torch_threads)
        while self._wait_for_work():
            try:
                self._step()
            except Exception as error:  # engine-wide (row failures end inside the step): fail what ran
                self._fail_running(error)
        self._fail_running(EngineClosedError("the inference engine was closed before the request finished"))
        with self._condition:
            waiting = self._waiting.drain()
        for item in waiting:
            item.handle.fail(EngineClosedError("the inference engine was closed before the request started"))

    def _wait_for_work(self) -> bool:
        """Blocks while there is nothing to do; returns False once the engine is closing."""
        idle = not self._busy()
        with self._condition:
            self._condition.wait_for(lambda: self._closed or self._busy() or self._ready())
            if self._closed:
                return False
        if idle and self.batch_window_s:
            time.sleep(self.batch_window_s)  # let requests arriving together share the first forward
        return True

    def _busy(self) -> bool:
        return bool(self._batch.rows or self._prefills)

    def _ready(self) -> bool:
        """Whether some waiting request could be admitted or dropped now (caller holds the condition)."""
        return any(
            item.handle.cancelled or self._slots.ready(item.handle.request.adapter) for item in self._waiting
        )

    def _step(self) -> None:
        self._drop_cancelled()
        self._admit()
        self._advance_prefills()
        self._release(self._batch.remove_finished())
        if self._batch.rows:
            started = time.perf_counter()
            self._batch.step()
            self.stats.decode_seconds += time.perf_counter() - started
            self.stats.decode_steps += 1
            self.stats.decode_tokens += len(self._batch)
            self._release(self._batch.remove_finished())
        self.stats.isolation_retries = self._batch.isolation_retries

    def _drop_cancelled(self) -> None:
        """Ends cancelled requests wherever they are: waiting, in prefill, or running."""
        with self._condition:
            cancelled = [item for item in self._waiting if item.handle.cancelled]
            for item in cancelled:
                self._waiting.remove(item)
        for item in cancelled:
            item.handle.finish(GenerationResult("", len(item.prompt_ids), 0, "cancelled"))
        self.stats.cancelled += len(cancelled)
        for group in [group for group in self._prefills if group.cancelled]:
            self._prefills.remove(group)
            for row in group.rows:
                row.guarded(row.finish, "cancelled")
            self._release(group.rows)
        for row in self._batch.rows:
            if row.handle.cancelled and row.finish_reason is None:
                row.guarded(row.finish, "cancelled")
                self.stats.cancelled += 1

    def _admit(self) -> None:
        """Takes waiting requests whose adapters are ready, fairly across tenants, up to the row bounds."""
        rows: list[Row] = []
        running = Counter(row.tenant for row in self._batch.rows)
        running.update(row.tenant for group in self._prefills for row in group.rows)
        free = self.max_batch_size - sum(running.values())
        with self._condition:
            candidates = self._waiting.fair_order()
        for item in candidates:
            if len(rows) >= free:
                break
            cap = self.max_rows_per_tenant
            if cap is not None and running[item.tenant] >= cap:
                continue
            try:
                row = self._row_for(item)
            except Exception as error:  # e.g. an AdapterError: it ends this request only
                self._dequeue(item)
                item.handle.fail(error)
                continue
            if row is not None:
                self._dequeue(item)
                rows.append(row)
                running[item.tenant] += 1
                item.handle.admission_index = self.stats.admitted
                self.stats.admitted += 1
        for group_rows in pack_groups(rows, self.prefill_chunk_tokens):
            self._prefills.append(PrefillGroup(group_rows, self._batch.device, self.prefill_chunk_tokens))

    def _row_for(self, item: Waiting) -> Row | None:
        """A batch row for ``item``, or None while its adapter is loading or no cache slot is free."""
        request = item.handle.request
        slot, key = self._slots.acquire(request.adapter)
        if slot is None:
            return None
        generator = sampling_generator(self._batch.device, request.seed, request.temperature)
        return Row(item.handle, item.prompt_ids, slot, key, self._eos_ids, self.tokenizer, generator)

    def _advance_prefills(self) -> None:
        """One chunk of every prefilling group; a finished group joins the batch with its first tokens."""
        for group in list(self._prefills):
            try:
                logits = group.advance(self._batch.forward)
            except Exception as error:  # the group's data or adapter: retry its rows alone, from the start
                self._prefills.remove(group)
                self._split_failed(group, error)
                continue
            self.stats.prefill_chunks += 1
            if logits is not None:
                self._prefills.remove(group)
                tokens = sample(group.rows, logits)
                self._batch.join(group.rows, group.cache, group.mask, group.next_positions())
                self._batch.start(group.rows, tokens)
                self.stats.prefills += 1
                self.stats.peak_batch_size = max(self.stats.peak_batch_size, len(self._batch))

    def _split_failed(self, group: PrefillGroup, error: Exception) -> None:
        if len(group.rows) == 1:
            group.rows[0].fail(error)
            self._release(group.rows)
            return
        for row in group.rows:
            self._prefills.append(PrefillGroup([row], self._batch.device, self.prefill_chunk_tokens))

    def _dequeue(self, item: Waiting) -> None:
        with self._condition:
            self._waiting.remove(item)
            self._waiting.served(item.tenant)

    def _release(self, rows: list[Row]) -> None:
        for row in rows:
            self._slots.release(row.adapter_key)
        if rows:
            self._turnover.record(time.monotonic(), len(rows))

    def _fail_running(self, error: BaseException) -> None:
        rows = self._batch.rows + [row for group in self._prefills for row in group.rows]
        self._batch, self._prefills = DecodeBatch(self.adapters), []
        for row in rows:
            row.fail(error)
        self._release(rows)
