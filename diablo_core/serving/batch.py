"""The running batch of the inference engine: rows join at step boundaries and leave when they finish.

Rows are left-padded into one KV cache. Each row carries its own attention mask and position ids, so a
row computes the same function whatever else shares the batch; each row also has its own adapter slot,
sampling generator, stop sequences and token budget. A failure that belongs to one row (its sampling, its
text, its handle) ends that row alone; when the shared forward itself fails, the cache is rolled back and
every row is retried alone, so only the rows that fail on their own end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from diablo_core.generation.decoding import pick_token
from diablo_core.serving.multi_adapter import MultiAdapterModel
from diablo_core.serving.row import Row


def _left_pad(cache: DynamicCache, mask: torch.Tensor, length: int) -> torch.Tensor:
    """Pads every layer's keys/values and the ``(B, L)`` mask on the left to ``length`` positions."""
    pad = length - mask.shape[1]
    if pad:
        for layer in cache.layers:
            layer.keys = F.pad(layer.keys, (0, 0, pad, 0))  # (B, H, length, D)
            layer.values = F.pad(layer.values, (0, 0, pad, 0))  # (B, H, length, D)
    return F.pad(mask, (pad, 0))  # (B, length)


def _row_cache(cache: DynamicCache, index: int) -> DynamicCache:
    """A cache holding row ``index`` of ``cache`` only (views, so retrying one row copies nothing)."""
    single = DynamicCache()
    for layer_index, layer in enumerate(cache.layers):
        single.update(layer.keys[index : index + 1], layer.values[index : index + 1], layer_index)
    return single


def _truncate(cache: DynamicCache, length: int) -> None:
    """Drops positions past ``length`` that a forward which failed midway wrote into some layers."""
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]  # (B, H, L, D)


def sample(rows: Sequence[Row], logits: Sequence[torch.Tensor | None]) -> list[int]:
    """Each row's next token with its own settings and generator; a row whose sampling fails ends alone."""
    picks = []
    for row, row_logits in zip(rows, logits, strict=True):
        token = 0  # a placeholder for a failed row: it is fed to nothing, the row leaves the batch
        if row_logits is not None and row.finish_reason is None:
            request = row.handle.request
            try:
                token = pick_token(row_logits, request.temperature, request.top_p, row.generator)
            except Exception as error:
                row.fail(error)
        picks.append(token)
    return picks


class DecodeBatch:
    """The rows being decoded together, their shared KV cache and per-row masks and positions.

    Args:
        adapters: The shared model, wrapped for per-row adapter routing.
    """

    def __init__(self, adapters: MultiAdapterModel) -> None:
        self.adapters = adapters
        self.model = adapters.model
        self.device = next(self.model.parameters()).device
        self.isolation_retries = 0  # shared forwards that failed and were retried row by row
        self._reset()

    def _reset(self) -> None:
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # (B, L): 1 = real token
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,): next position id
        self.pending = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,): sampled, not yet fed

    def __len__(self) -> int:
        return len(self.rows)

    def forward(self, slots: Sequence[int], **inputs: Any) -> torch.Tensor:
        """The routed model's last-position logits ``(B, V)`` in float32."""
        with self.adapters.route(slots):
            output = self.model(**inputs, use_cache=True, logits_to_keep=1)
        return output.logits[:, -1].float()  # (B, V)

    @torch.inference_mode()
    def join(self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor, positions: torch.Tensor) -> None:
        """Adds prefilled rows (their ``(b, P)`` mask, ``(b,)`` next positions) to the batch, left-padding."""
        if self.cache is None:
            self.cache, self.mask = cache, mask
        else:
            length = max(self.mask.shape[1], mask.shape[1])
            self.mask = torch.cat([_left_pad(self.cache, self.mask, length), _left_pad(cache, mask, length)])
            for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
                mine.keys = torch.cat([mine.keys, theirs.keys])  # (B, H, L, D)
                mine.values = torch.cat([mine.values, theirs.values])  # (B, H, L, D)
        self.rows += rows
        self.positions = torch.cat([self.positions, positions])  # (B,)

    def start(self, rows: list[Row], tokens: list[int]) -> None:
        """Sets the just-joined rows' first tokens pending and publishes them."""
        new = torch.tensor(tokens, dtype=torch.long, device=self.device)  # (b,)
        self.pending = torch.cat([self.pending, new])  # (B,)
        for row, token in zip(rows, tokens, strict=True):
            if row.finish_reason is None:
                row.guarded(row.accept, token)

    @torch.inference_mode()
    def step(self) -> None:
        """Feeds every row's pending token and samples the next one."""
        length = self.mask.shape[1]
        self.mask = F.pad(self.mask, (0, 1), value=1)  # (B, L + 1)
        try:
            logits: Sequence[torch.Tensor | None] = self._decode(self.rows, self.cache, self.mask)
        except Exception:  # a row's data or adapter may break the shared forward: find it alone
            self.isolation_retries += 1
            _truncate(self.cache, length)
            logits = self._decode_alone(length)
        tokens = sample(self.rows, logits)
        self.positions = self.positions + 1
        self.pending = torch.tensor(tokens, dtype=torch.long, device=self.device)  # (B,)
        for row, token in zip(self.rows, tokens, strict=True):
            if row.finish_reason is None:
                row.guarded(row.accept, token)

    def _decode(
        self, rows: Sequence[Row], cache: DynamicCache, mask: torch.Tensor, index: int | None = None
    ) -> torch.Tensor:
        """Decode logits ``(B, V)`` of ``rows``: the whole batch, or the one row at ``index``."""
        pending, positions = self.pending, self.positions
        if index is not None:
            pending, positions = pending[index : index + 1], positions[index : index + 1]
        return self.forward(
            [row.slot for row in rows],
            input_ids=pending[:, None],  # (B, 1)
            attention_mask=mask,  # (B, L + 1)
            position_ids=positions[:, None],  # (B, 1)
            past_key_values=cache,
        )

    def _decode_alone(self, length: int) -> list[torch.Tensor | None]:
        """Runs each row's decode forward on its own; a row whose forward fails ends with that error."""
        logits: list[torch.Tensor | None] = []
        caches = []
        for index, row in enumerate(self.rows):
            single = _row_cache(self.cache, index)
            try:
                logits.append(self._decode([row], single, self.mask[index : index + 1], index)[0])
            except Exception as error:
                row.fail(error)
                logits.append(None)
                _truncate(single, length)
                for layer in single.layers:  # the failed row keeps a column of zeros until it is removed
                    layer.keys = F.pad(layer.keys, (0, 0, 0, 1))  # (1, H, L + 1, D)
                    layer.values = F.pad(layer.values, (0, 0, 0, 1))  # (1, H, L + 1, D)
            caches.append(single)
        for layer_index, layer in enumerate(self.cache.layers):
            layer.keys = torch.cat([single.layers[layer_index].keys for single in caches])  # (B, H, L + 1, D)
            layer.values = torch.cat([single.layers[layer_index].values for single in caches])
        return logits

    def remove_finished(self) -> list[Row]:
        """Drops finished (or cancelled, or failed) rows from the batch and the cache; returns them."""
        keep = [index for index, row in enumerate(self.rows) if row.finish_reason is None]
        if len(keep) == len(self.rows):
            return []
        gone = [row for row in self.rows if row.finish_reason is not None]
        if not keep:
            self._reset()
            return gone
        index = torch.tensor(keep, dtype=torch.long, device=self.device)  # (B',)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.positions, self.pending = self.mask[index], self.positions[index], self.pending[index]
        start = int(self.mask.any(0).long().argmax())  # leading columns that are padding in every row
        self.mask = self.mask[:, start:]  # (B', L')
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]  # (B', H, L', D)
            layer.values = layer.values[index, :, start:]  # (B', H, L', D)
        return gone
