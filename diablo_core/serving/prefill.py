"""Prompt prefill in chunks, so that a long prompt never stalls the rows already decoding.

New rows are packed into groups whose left-padded prompts fit one chunk together; a prompt longer than a
chunk gets a group of its own. Each engine step runs one chunk of every group (and then one decode step of
the running batch); a group whose whole prompt is in samples its first tokens and joins the batch.
Chunked attention over the cache computes the same function as one forward over the whole prompt.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import DynamicCache

from diablo_core.serving.row import Row

Forward = Callable[..., torch.Tensor]


def pack_groups(rows: list[Row], chunk_tokens: int | None) -> list[list[Row]]:
    """Splits ``rows`` (in order) into groups of at most ``chunk_tokens`` padded prompt tokens each."""
    groups: list[list[Row]] = []
    longest = 0
    for row in rows:
        longest_with = max(longest, len(row.prompt_ids))
        if groups and (chunk_tokens is None or (len(groups[-1]) + 1) * longest_with <= chunk_tokens):
            groups[-1].append(row)
            longest = longest_with
        else:
            groups.append([row])
            longest = len(row.prompt_ids)
    return groups


class PrefillGroup:
    """Rows whose prompts go through the model together, one chunk per engine step.

    Args:
        rows: The group's rows.
        device: Where the model runs.
        chunk_tokens: Most prompt tokens (padding included) per forward; None: the whole prompt at once.
    """

    def __init__(self, rows: list[Row], device: torch.device, chunk_tokens: int | None) -> None:
        self.rows = rows
        length = max(len(row.prompt_ids) for row in rows)
        self.ids = torch.zeros(len(rows), length, dtype=torch.long, device=device)  # (b, P)
        self.mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)  # (b, P)
        for index, row in enumerate(rows):
            self.ids[index, length - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids, device=device)
            self.mask[index, length - len(row.prompt_ids) :] = 1
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)  # (b, P): pads repeat 0, masked anyway
        self.cache = DynamicCache()
        self.done = 0  # prompt columns already in the cache
        self.columns = length if chunk_tokens is None else max(1, chunk_tokens // len(rows))

    @property
    def cancelled(self) -> bool:
        return all(row.handle.cancelled for row in self.rows)

    @torch.inference_mode()
    def advance(self, forward: Forward) -> torch.Tensor | None:
        """Runs the next chunk; returns the last position's logits ``(b, V)`` once the whole prompt is in."""
        end = min(self.ids.shape[1], self.done + self.columns)
        logits = forward(
            [row.slot for row in self.rows],
            input_ids=self.ids[:, self.done : end],  # (b, c)
            attention_mask=self.mask[:, :end],  # (b, done + c): the cached columns and this chunk
            position_ids=self.positions[:, self.done : end],  # (b, c)
            past_key_values=self.cache,
        )
        self.done = end
        return logits if end == self.ids.shape[1] else None

    def next_positions(self) -> torch.Tensor:
        """The ``(b,)`` position ids of each row's first generated token."""
        return self.positions[:, -1] + 1
