"""Adapters resident in a shared model's slots: loaded on demand, checked, kept least-recently-used.

An adapter is identified by the sha256 of its ``adapter_model.safetensors``: the caller (who knows the
artifact's recorded checksum) names it, the bytes read from disk must hash to it, and the cache is keyed by
it. A replaced adapter therefore has a new key and is never served from a stale entry.

Reading (:func:`read_adapter`) touches only the disk and may run on any thread; installing into the model
(:meth:`AdapterCache.insert`) must not overlap a forward, so the inference engine calls it between steps.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from diablo_core.errors import AdapterError
from diablo_core.methods.diablo.adapter_io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    adapter_config_from,
    check_quantization_match,
    read_adapter_config,
)
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.layer import block_layout
from diablo_core.methods.lora.adapter_io import is_lora_adapter
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.models.identity import BaseModelIdentity
from diablo_core.serving.adapter_ref import AdapterRef, normalize_sha256
from diablo_core.serving.lora_adapter import read_lora_pairs
from diablo_core.serving.multi_adapter import LowRankPair, MultiAdapterModel

DEFAULT_MAX_ADAPTERS = 16
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


@dataclass
class LoadedAdapter:
    """A verified adapter read from disk: module path -> ``(n, bi, bo)`` blocks on the CPU, or, for a LoRA
    adapter, module path -> (A ``(r, in)``, B * scaling ``(out, r)``) in ``low_rank``."""

    sha256: str
    config: DiaBloConfig | LoRAConfig
    blocks: dict[str, torch.Tensor]
    nbytes: int
    low_rank: dict[str, LowRankPair] = field(default_factory=dict)


def _checked_bytes(ref: AdapterRef) -> bytes:
    weights = ref.path / WEIGHTS_FILE
    if not weights.is_file() or not (ref.path / CONFIG_FILE).is_file():
        message = f"{ref.path} holds no adapter ({CONFIG_FILE} + {WEIGHTS_FILE})"
        raise AdapterError(message, "adapter_not_found")
    data = weights.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != ref.sha256:
        raise AdapterError(
            f"{weights}: sha256 is {actual}, expected {ref.sha256}; the file is corrupt or was replaced",
            "adapter_checksum_mismatch",
        )
    return data


def _check_base(
    ref: AdapterRef, document: dict, identity: BaseModelIdentity, allow_quantization: bool
) -> None:
    recorded = document["base_model"]
    if recorded["content_hash"] != identity.content_hash:
        raise AdapterError(
            f"adapter {ref.sha256} was trained on base model {recorded['name']!r} "
            f"({recorded['content_hash']}), but this engine serves {identity.name!r} "
            f"({identity.content_hash})",
            "adapter_base_mismatch",
        )
    check_quantization_match(recorded, identity, allow_quantization)


def _check_blocks(
    tensors: dict[str, torch.Tensor], config: DiaBloConfig, model: MultiAdapterModel
) -> dict[str, torch.Tensor]:
    """Module path -> blocks, after checking every tensor against the model's layer at that path."""
    blocks = {}
    for key, tensor in tensors.items():
        path = key.removesuffix(".blocks")
        linear = model.linear(path)
        if not key.endswith(".blocks") or linear is None:
            message = f"adapter tensor {key!r} names no linear layer of this model"
            raise AdapterError(message, "adapter_extra_tensor")
        expected = block_layout(linear.in_features, linear.out_features, config.num_blocks)
        if tuple(tensor.shape) != expected:
            raise AdapterError(
                f"{key}: shape {list(tensor.shape)} != {list(expected)} expected for this model's "
                f"{linear.in_features}->{linear.out_features} layer at N={config.num_blocks}",
                "adapter_shape_mismatch",
            )
        blocks[path] = tensor
    return blocks


def read_adapter(
    ref: AdapterRef,
    identity: BaseModelIdentity,
    model: MultiAdapterModel,
    allow_quantization_mismatch: bool = False,
) -> LoadedAdapter:
    """Reads an adapter from disk and checks its checksum, base identity, config and tensor shapes.

    ``allow_quantization_mismatch`` accepts an adapter trained on the same base weights stored with another
    quantization (e.g. trained on NF4, served on the full-precision base).

    Raises:
        AdapterError: ``adapter_not_found``, ``adapter_checksum_mismatch``, ``adapter_config_invalid``,
            ``adapter_base_mismatch``, ``adapter_quantization_mismatch``, ``adapter_missing_tensor``,
            ``adapter_extra_tensor`` or ``adapter_shape_mismatch``.
    """
    data = _checked_bytes(ref)
    if is_lora_adapter(ref.path):
        document, lora, pairs = read_lora_pairs(ref, data, model)
        _check_base(ref, document, identity, allow_quantization_mismatch)
        nbytes = sum(t.numel() * t.element_size() for pair in pairs.values() for t in pair)
        return LoadedAdapter(ref.sha256, lora, {}, nbytes, pairs)
    document = read_adapter_config(ref.path)
    _check_base(ref, document, identity, allow_quantization_mismatch)
    config = adapter_config_from(document)
    try:
        tensors = load_safetensors(data)
    except SafetensorError as error:
        message = f"{ref.path / WEIGHTS_FILE}: unreadable ({error})"
        raise AdapterError(message, "adapter_config_invalid") from error
    listed = {f"{path}.blocks" for path in document["modules"]}
    missing = sorted(listed - set(tensors))
    if missing:
        raise AdapterError(f"{ref.path / WEIGHTS_FILE} lacks tensors {missing}", "adapter_missing_tensor")
    extra = sorted(set(tensors) - listed)
    if extra:
        raise AdapterError(f"{ref.path / WEIGHTS_FILE} has unlisted tensors {extra}", "adapter_extra_tensor")
    blocks = _check_blocks(tensors, config, model)
    nbytes = sum(tensor.numel() * tensor.element_size() for tensor in blocks.values())
    return LoadedAdapter(ref.sha256, config, blocks, nbytes)


@dataclass
class _Entry:
    slot: int
    nbytes: int
    pins: int = 0


class AdapterCache:
    """Adapters installed in a :class:`MultiAdapterModel`'s slots, bounded by count and bytes (LRU).

    Entries in use by running requests are pinned and never evicted; :meth:`insert` returns None when the
    bounds cannot be met without evicting a pinned entry (the caller retries after a request finishes).

    Args:
        model: The shared model whose slots hold the adapters.
        identity: Identity of the shared base model; adapters for another base are refused.
        max_adapters: Most adapters resident at once.
        max_bytes: Most bytes of adapter blocks resident at once (as read from disk).
        allow_quantization_mismatch: Serve adapters trained on the same base stored with another
            quantization (see ``read_adapter``).
    """

    def __init__(
        self,
        model: MultiAdapterModel,
        identity: BaseModelIdentity,
        max_adapters: int = DEFAULT_MAX_ADAPTERS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        allow_quantization_mismatch: bool = False,
    ) -> None:
        if max_adapters < 1 or max_bytes < 1:
            raise ValueError(f"max_adapters and max_bytes must be positive, got {max_adapters}, {max_bytes}")
        self.model, self.identity = model, identity
        self.allow_quantization_mismatch = allow_quantization_mismatch
        self.max_adapters, self.max_bytes = max_adapters, max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def __contains__(self, sha256: str) -> bool:
        return normalize_sha256(sha256) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes of adapter blocks resident now."""
        return sum(entry.nbytes for entry in self._entries.values())

    def resident(self) -> list[str]:
        """Digests of the resident adapters, least recently used first."""
        return list(self._entries)

    def read(self, ref: AdapterRef) -> LoadedAdapter:
        """Reads and checks ``ref`` from disk (any thread; see :func:`read_adapter`)."""
        return read_adapter(ref, self.identity, self.model, self.allow_quantization_mismatch)

    def acquire(self, sha256: str) -> int | None:
        """Pins a resident adapter and returns its slot (marking it most recently used), else None."""
        with self._lock:
            entry = self._entries.get(normalize_sha256(sha256))
            if entry is None:
                return None
            self._entries.move_to_end(normalize_sha256(sha256))
            entry.pins += 1
            return entry.slot

    def release(self, sha256: str) -> None:
        """Unpins an adapter acquired before (it stays resident until evicted)."""
        with self._lock:
            self._entries[normalize_sha256(sha256)].pins -= 1

    def insert(self, loaded: LoadedAdapter) -> int | None:
        """Installs ``loaded`` into a free slot, pinned, evicting unpinned LRU entries as needed.

        Returns:
            The slot, or None when only evicting pinned entries would make room.

        Raises:
            AdapterError: ``adapter_too_large`` when the adapter alone exceeds ``max_bytes``.
        """
        if loaded.nbytes > self.max_bytes:
            raise AdapterError(
                f"adapter {loaded.sha256} has {loaded.nbytes} bytes, more than the cache's {self.max_bytes}",
                "adapter_too_large",
            )
        slot = self.acquire(loaded.sha256)
        if slot is not None:
            return slot
        with self._lock:
            if not self._make_room(loaded.nbytes):
                return None
            used = {entry.slot for entry in self._entries.values()}
            slot = next(index for index in range(1, self.max_adapters + 2) if index not in used)
            self.model.set_slot(slot, loaded.blocks, loaded.low_rank)
            self._entries[loaded.sha256] = _Entry(slot, loaded.nbytes, pins=1)
            return slot

    def load(self, ref: AdapterRef) -> int | None:
        """Reads (when not resident) and acquires ``ref``: a synchronous :meth:`read` + :meth:`insert`."""
        slot = self.acquire(ref.sha256)
        return slot if slot is not None else self.insert(self.read(ref))

    def discard(self, sha256: str) -> bool:
        """Evicts an unpinned adapter now (e.g. when its artifact is deleted); returns whether it did."""
        with self._lock:
            entry = self._entries.get(normalize_sha256(sha256))
            if entry is None or entry.pins:
                return False
            self._evict(normalize_sha256(sha256))
            return True

    def _make_room(self, nbytes: int) -> bool:
        """Evicts unpinned entries, least recently used first, until one more of ``nbytes`` fits."""
        total = sum(entry.nbytes for entry in self._entries.values())
        for key in [key for key, entry in self._entries.items() if not entry.pins]:
            if len(self._entries) < self.max_adapters and total + nbytes <= self.max_bytes:
                break
            total -= self._entries[key].nbytes
            self._evict(key)
        return len(self._entries) < self.max_adapters and total + nbytes <= self.max_bytes

    def _evict(self, key: str) -> None:
        self.model.clear_slot(self._entries.pop(key).slot)
