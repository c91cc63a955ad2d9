"""Function calling in chat data: validation with line numbers and codes, rendering, and labels."""

from __future__ import annotations

import json
from typing import Any

import pytest

from diablo_core.data.datasets import validate_dataset
from diablo_core.data.tokenization import IGNORE_INDEX, tokenize_example
from tests.core.tiny_tokenizer import learned_segments, make_tiny_tokenizer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}
TOOL_CHAT: dict[str, Any] = {
    "tools": [WEATHER],
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4 C, rain"},
        {"role": "assistant", "content": "It is 4 C and raining."},
    ],
}
# A ChatML template that renders tools itself, written as Qwen2.5's is (tools in the system turn).
TOOLS_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\\n<tools>' }}{% for tool in tools %}{{ '\\n' + (tool | tojson) }}"
    "{% endfor %}{{ '\\n</tools><|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
    "{% if message.tool_calls %}{% for call in message.tool_calls %}"
    "{{ '<tool_call>' + (call.function | tojson) + '</tool_call>' }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def jsonl(*rows: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def with_messages(*messages: dict[str, Any], tools: list[Any] | None = None) -> dict[str, Any]:
    return {"messages": list(messages)} | ({"tools": tools} if tools is not None else {})


USER = {"role": "user", "content": "hi"}
REPLY = {"role": "assistant", "content": "ok"}
BAD = [
    (with_messages(USER, REPLY, tools={"a": 1}), "invalid_tools", "line 2: 'tools' must be a list"),
    (with_messages(USER, REPLY, tools=[{"type": "web"}]), "invalid_tool", "line 2: tool 1: must be"),
    (
        with_messages(USER, REPLY, tools=[{"type": "function", "function": {"name": "a b"}}]),
        "invalid_tool",
        "line 2: tool 1: 'function.name' must be 1 to 64",
    ),
    (with_messages(USER, REPLY, tools=[WEATHER, WEATHER]), "invalid_tool", "line 2: tool 2: function 'get_"),
    (
        with_messages(USER, {"role": "assistant", "tool_calls": []}),
        "invalid_tool_calls",
        "line 2: message 2: 'tool_calls' must be a non-empty list",
    ),
    (
        with_messages(USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f"}}]}),
        "invalid_tool_calls",
        "line 2: message 2: tool call 1: 'function.arguments' must be a string holding a JSON object",
    ),
    (
        with_messages(
            USER,
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1]"}}]},
        ),
        "invalid_tool_calls",
        "line 2: message 2: tool call 1: 'function.arguments' must be a string holding a JSON object",
    ),
    (
        with_messages(
            USER,
            {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{}"}}]},
            tools=[WEATHER],
        ),
        "unknown_tool",
        "line 2: message 2: tool call 1: function 'f' is not defined in 'tools'",
    ),
    (
        with_messages({**USER, "tool_calls": [CALL]}, REPLY),
        "invalid_tool_calls",
        "line 2: message 1: 'tool_calls' is only allowed on assistant messages",
    ),
    (
        with_messages(USER, {"role": "tool", "content": "4 C"}, REPLY),
        "missing_tool_call_id",
        "line 2: message 2: 'tool_call_id' is missing",
    ),
    (
        with_messages(USER, {"role": "tool", "tool_call_id": "call_9", "content": "4 C"}, REPLY),
        "unknown_tool_call_id",
        "line 2: message 2: 'tool_call_id' 'call_9' answers no earlier tool call",
    ),
    (
        with_messages(USER, {"role": "assistant", "tool_calls": [CALL], "content": 3}),
        "content_not_string",
        "line 2: message 2: 'content' must be a string",
    ),
    (
        with_messages(USER, {"role": "assistant", "content": "ok", "weight": 0.5}),
        "invalid_weight",
        "line 2: message 2: 'weight' must be 0 or 1",
    ),
]


@pytest.mark.parametrize(
    ("row", "code", "message"), BAD, ids=[f"{i}-{code}" for i, (_, code, _) in enumerate(BAD)]
)
def test_function_calling_problems_name_the_line_and_a_code(
    row: dict[str, Any], code: str, message: str
) -> None:
    report = validate_dataset(jsonl(TOOL_CHAT, row))
    assert [(problem.line, problem.code) for problem in report.problems] == [(2, code)]
    assert report.problems[0].message.startswith(message), report.problems[0].message


def test_a_conversation_with_tools_is_valid_and_counts_its_tokens() -> None:
    report = validate_dataset(jsonl(TOOL_CHAT, TOOL_CHAT), tokenizer=make_tiny_tokenizer())
    assert report.ok, report.problems
    assert report.format == "chat" and report.num_tokens and report.num_tokens > 0


def test_a_template_without_tools_gets_them_written_into_the_conversation() -> None:
    tokenizer = make_tiny_tokenizer()
    example = tokenize_example(TOOL_CHAT, tokenizer, max_length=None)
    text = tokenizer.decode(example.input_ids)
    assert text.startswith("<|im_start|>system\n# Tools")
    assert json.dumps(WEATHER) in text
    assert "<|im_start|>user\n<tool_response>\n4 C, rain\n</tool_response><|im_end|>" in text
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert learned_segments(example, tokenizer) == [f"{call}<|im_end|>", "It is 4 C and raining.<|im_end|>"]


def test_a_template_with_tools_renders_them_itself() -> None:
    tokenizer = make_tiny_tokenizer(TOOLS_TEMPLATE)
    example = tokenize_example(TOOL_CHAT, tokenizer, max_length=None)
    text = tokenizer.decode(example.input_ids)
    assert text.startswith(f"<|im_start|>system\n<tools>\n{json.dumps(WEATHER)}\n</tools><|im_end|>")
    assert "<|im_start|>tool\n4 C, rain<|im_end|>" in text
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert learned_segments(example, tokenizer) == [f"{call}<|im_end|>", "It is 4 C and raining.<|im_end|>"]


def test_weight_zero_tool_calls_are_not_learned() -> None:
    tokenizer = make_tiny_tokenizer()
    messages = [dict(message) for message in TOOL_CHAT["messages"]]
    messages[1]["weight"] = 0
    example = tokenize_example({**TOOL_CHAT, "messages": messages}, tokenizer, max_length=None)
    assert learned_segments(example, tokenizer) == ["It is 4 C and raining.<|im_end|>"]
    assert all(label == IGNORE_INDEX for label in example.labels[: len(example.labels) // 2])
