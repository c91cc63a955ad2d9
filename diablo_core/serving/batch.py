"""The running batch of the inference engine: rows join at step boundaries and leave when they finish.

Rows are left-padded into one KV cache. Each row carries its own attention mask and position ids, so a
row computes the same function whatever else shares the batch; each row also has its own adapter slot,
sampling generator, stop sequences and token budget. The text rules (end-of-sequence, stop cut, held-back
partial characters and stop prefixes, token counts) are those of ``diablo_core.generation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from diablo_core.generation import GenerationResult, _first_stop, _generator, _pick, _safe_delta
from diablo_core.serving.handle import RequestHandle
from diablo_core.serving.multi_adapter import MultiAdapterModel


@dataclass
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

    def accept(self, token: int) -> None:
        """Appends a generated token; publishes the new visible text and, when the row ends, its result."""
        request = self.handle.request
        self.completion.append(token)
        if token in self.eos_ids:
            self.finish("stop")
            return
        self.text = self.tokenizer.decode(self.completion, skip_special_tokens=True)
        cut = _first_stop(self.text, [stop for stop in request.stop or [] if stop])
        if cut is not None:
            self.text = self.text[:cut]
            self.finish("stop")
            return
        delta = _safe_delta(self.text, self.emitted, [stop for stop in request.stop or [] if stop])
        if delta:
            self.emitted += delta
            self.handle.push(delta)
        if len(self.completion) >= request.max_tokens:
            self.finish("length")

    def finish(self, reason: str) -> None:
        """Publishes the remaining text and the result."""
        self.finish_reason = reason
        if self.text.startswith(self.emitted) and len(self.text) > len(self.emitted):
            self.handle.push(self.text[len(self.emitted) :])
        self.handle.finish(GenerationResult(self.text, len(self.prompt_ids), len(self.completion), reason))


def new_generator(device: torch.device, seed: int | None, temperature: float) -> torch.Generator | None:
    """The row's own sampling generator (None when greedy), seeded like ``generation.generate``."""
    return _generator(device, seed) if temperature > 0 else None


@dataclass
class Prefill:
    """New rows after their prompt forward: their cache, ``(b, P)`` mask, next positions and first tokens."""

    rows: list[Row]
    cache: DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    tokens: list[int]


def _left_pad(cache: DynamicCache, mask: torch.Tensor, length: int) -> torch.Tensor:
    """Pads every layer's keys/values and the ``(B, L)`` mask on the left to ``length`` positions."""
    pad = length - mask.shape[1]
    if pad:
        for layer in cache.layers:
            layer.keys = F.pad(layer.keys, (0, 0, pad, 0))  # (B, H, length, D)
            layer.values = F.pad(layer.values, (0, 0, pad, 0))  # (B, H, length, D)
    return F.pad(mask, (pad, 0))  # (B, length)


class DecodeBatch:
    """The rows being decoded together, their shared KV cache and per-row masks and positions.

    Args:
        adapters: The shared model, wrapped for per-row adapter routing.
    """

    def __init__(self, adapters: MultiAdapterModel) -> None:
        self.adapters = adapters
        self.model = adapters.model
        self.device = next(self.model.parameters()).device
        self._reset()

    def _reset(self) -> None:
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # (B, L): 1 = real token
        self.positions = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,): next position id
        self.pending = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,): sampled, not yet fed

    def __len__(self) -> int:
        return len(self.rows)

    def _forward(self, slots: Sequence[int], **inputs: Any) -> torch.Tensor:
        with self.adapters.route(slots):
            output = self.model(**inputs, use_cache=True, logits_to_keep=1)
        return output.logits[:, -1].float()  # (B, V)

    def _sample(self, rows: Sequence[Row], logits: torch.Tensor) -> list[int]:
        """Picks each row's next token with its own settings and generator."""
        picks = []
        for row, row_logits in zip(rows, logits, strict=True):
            request = row.handle.request
            picks.append(_pick(row_logits, request.temperature, request.top_p, row.generator))
        return picks

    @torch.inference_mode()
    def prefill(self, rows: list[Row]) -> Prefill:
        """Runs the new rows' prompts as one left-padded batch and samples their first tokens.

        The running batch is untouched (a failure here concerns the new rows only); :meth:`join` adds them.
        """
        length = max(len(row.prompt_ids) for row in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long, device=self.device)  # (b, P)
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=self.device)  # (b, P)
        for index, row in enumerate(rows):
            ids[index, length - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids, device=self.device)
            mask[index, length - len(row.prompt_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (b, P): pads repeat position 0, masked anyway
        cache = DynamicCache()
        logits = self._forward(
            [row.slot for row in rows],
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
        )
        return Prefill(rows, cache, mask, positions[:, -1] + 1, self._sample(rows, logits))

    @torch.inference_mode()
    def join(self, new: Prefill) -> None:
        """Adds prefilled rows to the batch (left-padding the shorter cache); publishes their first tokens."""
        if self.cache is None:
            self.cache, self.mask = new.cache, new.mask
        else:
            length = max(self.mask.shape[1], new.mask.shape[1])
            self.mask = torch.cat(
                [_left_pad(self.cache, self.mask, length), _left_pad(new.cache, new.mask, length)]
            )
            for mine, theirs in zip(self.cache.layers, new.cache.layers, strict=True):
                mine.keys = torch.cat([mine.keys, theirs.keys])  # (B, H, L, D)
                mine.values = torch.cat([mine.values, theirs.values])  # (B, H, L, D)
        self.rows += new.rows
        self.positions = torch.cat([self.positions, new.positions])  # (B,)
        self.pending = torch.cat([self.pending, torch.tensor(new.tokens, device=self.device)])  # (B,)
        for row, token in zip(new.rows, new.tokens, strict=True):
            row.accept(token)

    @torch.inference_mode()
    def step(self) -> None:
        """Feeds every row's pending token and samples the next one."""
        self.mask = F.pad(self.mask, (0, 1), value=1)  # (B, L + 1)
        logits = self._forward(
            [row.slot for row in self.rows],
            input_ids=self.pending[:, None],  # (B, 1)
            attention_mask=self.mask,
            position_ids=self.positions[:, None],  # (B, 1)
            past_key_values=self.cache,
        )
        tokens = self._sample(self.rows, logits)
        self.positions = self.positions + 1
        self.pending = torch.tensor(tokens, dtype=torch.long, device=self.device)  # (B,)
        for row, token in zip(self.rows, tokens, strict=True):
            row.accept(token)

    def remove_finished(self) -> list[Row]:
        """Drops finished (or cancelled) rows from the batch and the cache; returns them."""
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
