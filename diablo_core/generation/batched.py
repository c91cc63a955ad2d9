"""Greedy decoding of several prompts together: left-padded into one batch that shares one KV cache.

Evaluation answers many prompts with the same settings, so it decodes them as one batch instead of one by
one. Prompts are padded on the left so that every row's next token is read at the last column; each row's
positions count its own tokens only (``position_ids``), so a padded row is decoded as it is alone. A row ends
at an end-of-sequence token or at its own token budget; the batch ends when every row has.
"""

from __future__ import annotations

from typing import Any

import torch

from diablo_core.generation.decoding import eos_token_ids
from diablo_core.generation.result import GenerationResult


@torch.inference_mode()
def greedy_batch(
    model: Any, tokenizer: Any, prompts: list[list[int]], budgets: list[int]
) -> list[GenerationResult]:
    """Greedy completions of ``prompts`` (token ids), the i-th at most ``budgets[i]`` tokens long.

    The model is used as it is (callers put it in eval mode); answers match ``generate`` at temperature 0
    up to floating-point differences of the batched matmuls.
    """
    if len(prompts) != len(budgets) or any(not prompt for prompt in prompts):
        raise ValueError("give one non-empty prompt per budget")
    device = next(model.parameters()).device
    eos = eos_token_ids(model, tokenizer)
    ids, mask = _left_padded(prompts, _pad_id(tokenizer, eos), device)  # (B, T), (B, T)
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # (B, T): a row's positions skip its padding
    completions: list[list[int]] = [[] for _ in prompts]
    reasons = ["length"] * len(prompts)
    open_rows = {row for row, budget in enumerate(budgets) if budget > 0}
    past, step_ids = None, ids
    while open_rows:
        output = model(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
        )
        past = output.past_key_values
        tokens = output.logits[:, -1].float().argmax(-1)  # (B,)
        for row in sorted(open_rows):
            completions[row].append(int(tokens[row]))
            if int(tokens[row]) in eos:
                reasons[row] = "stop"
            if reasons[row] == "stop" or len(completions[row]) >= budgets[row]:
                open_rows.discard(row)
        step_ids = tokens.unsqueeze(1)  # (B, 1); finished rows decode on, unread
        positions = positions[:, -1:] + 1  # (B, 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (B, T + steps)
    return [
        GenerationResult(_text(tokenizer, tokens, eos), len(prompt), len(tokens), reason)
        for prompt, tokens, reason in zip(prompts, completions, reasons, strict=True)
    ]


def _left_padded(
    prompts: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T): 1 on real tokens
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _pad_id(tokenizer: Any, eos: set[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return min(eos) if eos else 0  # masked out: any id will do


def _text(tokenizer: Any, tokens: list[int], eos: set[int]) -> str:
    """The completion's text without its closing end-of-sequence token."""
    kept = tokens[:-1] if tokens and tokens[-1] in eos else tokens
    return tokenizer.decode(kept, skip_special_tokens=True)
