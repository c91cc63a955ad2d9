"""Turn training examples into token ids and loss labels, and batch them.

Chat examples are rendered with the tokenizer's chat template. The learned span of each assistant message is
found by rendering prefixes of the conversation: the text between "everything before this message plus the
generation prompt" and "everything up to and including this message" is the message's content and its
end-of-turn token. Tokens starting inside such a span get labels; everything else is ``-100``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    """Token ids of one example and its labels (``-100`` where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_learned_tokens(self) -> int:
        """How many positions carry a label."""
        return sum(label != IGNORE_INDEX for label in self.labels)


def tokenize_example(
    example: dict[str, Any], tokenizer: Any, max_length: int | None = 256
) -> TokenizedExample:
    """Tokenize one chat (``messages``) or prompt/completion example.

    Args:
        example: ``{"messages": [...]}`` or ``{"prompt": ..., "completion": ...}``.
        tokenizer: A Hugging Face tokenizer (fast, for offsets in chat examples).
        max_length: Keep at most this many tokens (right truncation); ``None`` keeps all.

    Returns:
        The ids and aligned labels.
    """
    if "messages" in example:
        text, spans = _render_chat(example["messages"], tokenizer)
        result = _label_spans(text, spans, tokenizer)
    else:
        result = _tokenize_prompt_completion(example["prompt"], example["completion"], tokenizer)
    if max_length is not None:
        result = TokenizedExample(result.input_ids[:max_length], result.labels[:max_length])
    return result


def tokenize_examples(
    examples: Iterable[dict[str, Any]], tokenizer: Any, max_length: int | None = 256
) -> list[TokenizedExample]:
    """Tokenize every example with :func:`tokenize_example`."""
    return [tokenize_example(example, tokenizer, max_length) for example in examples]


def collate(batch: list[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into ``input_ids``, ``attention_mask`` and ``labels`` tensors of shape (B, T)."""
    width = max(len(example.input_ids) for example in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for row, example in enumerate(batch):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[row, :length] = torch.tensor(example.labels, dtype=torch.long)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def render_messages(messages: list[dict[str, Any]], tokenizer: Any, add_generation_prompt: bool) -> str:
    """Render messages as text: the chat template, or ``role: content`` lines when there is none."""
    plain = [{"role": message["role"], "content": message["content"]} for message in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            plain, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    end = tokenizer.eos_token or ""
    text = "".join(f"{m['role']}: {m['content']}{end if m['role'] == 'assistant' else ''}\n" for m in plain)
    return text + ("assistant: " if add_generation_prompt else "")


def _render_chat(messages: list[dict[str, Any]], tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and return the character spans of its learned assistant turns."""
    text = render_messages(messages, tokenizer, add_generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        through, span = _assistant_span(messages, index, tokenizer)
        if not text.startswith(through):
            raise ValueError("the chat template does not render conversations incrementally")
        spans.append(span)
    return text, spans


def _assistant_span(
    messages: list[dict[str, Any]], index: int, tokenizer: Any
) -> tuple[str, tuple[int, int]]:
    """The conversation rendered through message ``index`` and that message's character span.

    The span covers the content and the end-of-turn token, not the whitespace after it.
    """
    before = render_messages(messages[:index], tokenizer, add_generation_prompt=True) if index else ""
    through = render_messages(messages[: index + 1], tokenizer, add_generation_prompt=False)
    if not through.startswith(before):
        # Templates that change earlier text when a turn is added: locate the content itself instead.
        start = through.rfind(messages[index]["content"])
        before = through[: max(start, 0)]
    return through, (len(before), len(through.rstrip()))


def _label_spans(text: str, spans: list[tuple[int, int]], tokenizer: Any) -> TokenizedExample:
    """Tokenize ``text`` and label the tokens that start inside one of ``spans``."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    for position, (start, _end) in enumerate(encoding["offset_mapping"]):
        if any(lo <= start < hi for lo, hi in spans):
            labels[position] = input_ids[position]
    return TokenizedExample(input_ids, labels)


def _tokenize_prompt_completion(prompt: str, completion: str, tokenizer: Any) -> TokenizedExample:
    """Prompt tokens masked; completion tokens and eos learned."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
    return TokenizedExample(
        input_ids=[*prompt_ids, *completion_ids], labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids
    )
