"""Turn training examples into token ids and loss labels (torch-free: ``training.loss`` batches them).

Chat examples are rendered with the tokenizer's chat template. The learned span of each assistant message is
the text between "everything before this message plus the generation prompt" and "everything up to and
including this message": the message's content and its end-of-turn token. Tokens starting inside such a span
get labels; everything else is ``-100``.

Rendering every prefix costs time quadratic in the turns, so for templates that render each message on its
own (ChatML and most others: the conversation is the concatenation of its messages' pieces) the spans are
found from one full render and renders of one or two messages, checked against the full render; other
templates fall back to rendering prefixes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from diablo_core.data.chat_format import template_conversation

IGNORE_INDEX = -100
TEMPLATE_KEYS = ("role", "content", "tool_calls", "tool_call_id")
# Renders messages, with a generation prompt or not, as one conversation's template does (tools bound).
Render = Callable[[list[dict[str, Any]], bool], str]


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
        example: ``{"messages": [...], "tools"?: [...]}`` or ``{"prompt": ..., "completion": ...}``.
        tokenizer: A Hugging Face tokenizer (fast, for offsets in chat examples).
        max_length: Keep at most this many tokens (right truncation); ``None`` keeps all.

    Returns:
        The ids and aligned labels.
    """
    if "messages" in example:
        messages, tools = template_conversation(example["messages"], example.get("tools"), tokenizer)
        text, spans = _render_chat(messages, tokenizer, tools)
        result = _label_spans(text, spans, tokenizer)
    else:
        result = _tokenize_prompt_completion(example["prompt"], example["completion"], tokenizer)
    if max_length is not None:
        result = TokenizedExample(result.input_ids[:max_length], result.labels[:max_length])
    return result


def count_example_tokens(example: dict[str, Any], tokenizer: Any) -> int:
    """The number of tokens :func:`tokenize_example` gives ``example`` (untruncated), from one render: the
    learned spans, which cost most of the renders, are not needed to count."""
    if "messages" not in example:
        return len(_tokenize_prompt_completion(example["prompt"], example["completion"], tokenizer).input_ids)
    messages, tools = template_conversation(example["messages"], example.get("tools"), tokenizer)
    text = render_messages(messages, tokenizer, False, tools)  # the text _render_chat labels
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_examples(
    examples: Iterable[dict[str, Any]], tokenizer: Any, max_length: int | None = 256
) -> list[TokenizedExample]:
    """Tokenize every example with :func:`tokenize_example`."""
    return [tokenize_example(example, tokenizer, max_length) for example in examples]


def render_messages(
    messages: list[dict[str, Any]],
    tokenizer: Any,
    add_generation_prompt: bool,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """Render messages as text: the chat template, or ``role: content`` lines when there is none.

    ``tools`` and the messages' ``tool_calls`` reach templates that render them (``data.chat_format``).
    """
    plain = [{key: message[key] for key in TEMPLATE_KEYS if key in message} for message in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            plain, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    end = tokenizer.eos_token or ""
    text = "".join(f"{m['role']}: {m['content']}{end if m['role'] == 'assistant' else ''}\n" for m in plain)
    return text + ("assistant: " if add_generation_prompt else "")


def _render_chat(
    messages: list[dict[str, Any]], tokenizer: Any, tools: list[dict[str, Any]] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and return the character spans of its learned assistant turns."""

    def render(part: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        return render_messages(part, tokenizer, add_generation_prompt, tools)

    text = render(messages, False)
    learned = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1) != 0]
    spans = _spans_from_pieces(messages, learned, text, render) if learned else []
    if spans is None:  # not concatenative: render every prefix (turns are bounded by validation)
        spans = _prefix_spans(messages, learned, text, render)
    return text, spans


def _message_pieces(messages: list[dict[str, Any]], text: str, render: Render) -> list[str] | None:
    """Each message's own text in ``text``, from renders of one and two messages (linear work in all).

    Message ``j``'s piece is the render of messages ``j-1, j`` less that of ``j-1`` alone, so start-of-
    conversation rules (a default system prompt) cancel out. None unless the pieces join into ``text``.
    """
    try:
        alone = [render([message], False) for message in messages]
        pieces = [alone[0]]
        for j in range(1, len(messages)):
            pair = render(messages[j - 1 : j + 1], False)
            if not pair.startswith(alone[j - 1]):
                return None
            pieces.append(pair[len(alone[j - 1]) :])
    except Exception:  # a template may refuse a lone or a pair of messages (roles must alternate)
        return None
    return pieces if "".join(pieces) == text else None


def _spans_from_pieces(
    messages: list[dict[str, Any]], learned: list[int], text: str, render: Render
) -> list[tuple[int, int]] | None:
    """The spans :func:`_prefix_spans` finds, for a concatenative template; None when it is not one."""
    pieces = _message_pieces(messages, text, render)
    if pieces is None:
        return None
    offsets = [0]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    spans = []
    for index in learned:
        prompt = _generation_prompt(messages[index - 1], render) if index else ""
        body = pieces[index].rstrip()
        if prompt is None or not pieces[index].startswith(prompt):
            return None  # _prefix_spans locates the content itself here
        end = offsets[index] + len(body) if body else len(text[: offsets[index]].rstrip())
        spans.append((offsets[index] + len(prompt), end))
    # The pieces' sums stand for renders of prefixes: check that for the last learned turn, once.
    last = learned[-1]
    before = render(messages[:last], True) if last else ""
    return spans if text.startswith(before) and len(before) == spans[-1][0] else None


def _generation_prompt(message: dict[str, Any], render: Render) -> str | None:
    """What the template adds after ``message`` to prompt the assistant; None if it rewrites the message."""
    plain = render([message], False)
    prompted = render([message], True)
    return prompted[len(plain) :] if prompted.startswith(plain) else None


def _prefix_spans(
    messages: list[dict[str, Any]], learned: list[int], text: str, render: Render
) -> list[tuple[int, int]]:
    """Spans found by rendering each learned turn's prefixes: any template, quadratic in turns."""
    spans = []
    for index in learned:
        through, span = _assistant_span(messages, index, render)
        if not text.startswith(through):
            raise ValueError("the chat template does not render conversations incrementally")
        spans.append(span)
    return spans


def _assistant_span(
    messages: list[dict[str, Any]], index: int, render: Render
) -> tuple[str, tuple[int, int]]:
    """The conversation rendered through message ``index`` and that message's character span.

    The span covers the content and the end-of-turn token, not the whitespace after it.
    """
    before = render(messages[:index], True) if index else ""
    through = render(messages[: index + 1], False)
    if not through.startswith(before):
        # Templates that change earlier text when a turn is added: locate the content itself instead.
        start = through.rfind(messages[index]["content"])
        before = through[: max(start, 0)]
    return through, (len(before), len(through.rstrip()))


def _label_spans(text: str, spans: list[tuple[int, int]], tokenizer: Any) -> TokenizedExample:
    """Tokenize ``text`` and label the tokens that start inside one of ``spans``.

    The spans are merged into sorted disjoint intervals, so each token costs one binary search.
    """
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    starts, ends = _merge_spans(spans)
    labels = [IGNORE_INDEX] * len(input_ids)
    for position, (start, _end) in enumerate(encoding["offset_mapping"]):
        interval = bisect_right(starts, start) - 1
        if interval >= 0 and start < ends[interval]:
            labels[position] = input_ids[position]
    return TokenizedExample(input_ids, labels)


def _merge_spans(spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Starts and ends of the union of ``spans`` (empty ones dropped), as sorted disjoint intervals."""
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in sorted(span for span in spans if span[0] < span[1]):
        if ends and lo <= ends[-1]:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


def _tokenize_prompt_completion(prompt: str, completion: str, tokenizer: Any) -> TokenizedExample:
    """Prompt tokens masked; completion tokens and eos learned."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
    return TokenizedExample(
        input_ids=[*prompt_ids, *completion_ids], labels=[IGNORE_INDEX] * len(prompt_ids) + completion_ids
    )
