"""Adapters for the engine's rows: read on a loader thread, installed into cache slots between steps.

A row needs its adapter resident in a cache slot, pinned while it runs. Reading from disk (checksum, base
identity, shapes) happens on a loader thread while the batch keeps decoding; the engine thread installs a
finished read at its next step. With a merged adapter every row uses slot 0 (the merged weights).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from diablo_core.errors import AdapterError
from diablo_core.serving.adapter_cache import AdapterCache, AdapterRef


class AdapterSlots:
    """Loads adapters in the background and hands out pinned cache slots for rows.

    Args:
        cache: The adapter cache over the shared model.
        merged_adapter: The adapter merged into the weights, if the engine serves only that one.
        notify: Called (from the loader thread) when a read finishes, to wake the engine.
    """

    def __init__(self, cache: AdapterCache, merged_adapter: AdapterRef | None, notify: Callable[[], None]):
        self.cache, self.merged_adapter, self._notify = cache, merged_adapter, notify
        self._loads: dict[str, Future] = {}
        self._lock = threading.Lock()  # submit (caller threads) and the engine thread both start loads
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="diablo-adapter-loader")

    def shutdown(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)

    def check_served(self, adapter: AdapterRef | None) -> None:
        """Raises ``adapter_not_served`` in merged mode for any other adapter or the base model."""
        merged = self.merged_adapter
        if merged is not None and (adapter is None or adapter.sha256 != merged.sha256):
            asked = "the base model" if adapter is None else f"adapter {adapter.sha256}"
            raise AdapterError(
                f"this engine serves only adapter {merged.sha256} (merged into the weights), not {asked}",
                "adapter_not_served",
            )

    def start_load(self, adapter: AdapterRef | None) -> None:
        """Starts reading an adapter that is neither resident nor loading."""
        if adapter is None or self.merged_adapter is not None or adapter.sha256 in self.cache:
            return
        with self._lock:
            if adapter.sha256 not in self._loads:
                future = self._loader.submit(self.cache.read, adapter)
                future.add_done_callback(lambda _: self._notify())
                self._loads[adapter.sha256] = future

    def ready(self, adapter: AdapterRef | None) -> bool:
        """Whether a row for ``adapter`` could start now (or fail at once, for a failed read)."""
        if adapter is None or self.merged_adapter is not None:
            return True
        future = self._loads.get(adapter.sha256)
        return adapter.sha256 in self.cache or (future is not None and future.done())

    def acquire(self, adapter: AdapterRef | None) -> tuple[int | None, str | None]:
        """The pinned slot of ``adapter`` (0 for the base or the merged adapter) and its cache key.

        The slot is None while the adapter is loading or no cache slot is free; a failed read raises.
        """
        if adapter is None or self.merged_adapter is not None:
            return 0, None
        slot = self.cache.acquire(adapter.sha256)
        if slot is None:
            future = self._loads.get(adapter.sha256)
            if future is None or not future.done():
                self.start_load(adapter)
                return None, None
            try:
                slot = self.cache.insert(future.result())
            except Exception:  # a failed read is retried from disk by the next request for it
                self._loads.pop(adapter.sha256, None)
                raise
            if slot is not None:
                self._loads.pop(adapter.sha256, None)
        return slot, adapter.sha256

    def release(self, key: str | None) -> None:
        if key is not None:
            self.cache.release(key)
