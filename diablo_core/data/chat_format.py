"""A conversation with function calls, as the tokenizer's chat template takes it.

Templates written for tools (Qwen2.5, Llama 3.1, Hermes, ...) get OpenAI's ``tools`` and ``tool_calls``
through ``apply_chat_template(tools=...)``, with each call's ``arguments`` decoded to the object Hugging Face
templates expect. Templates that know nothing of tools (SmolLM2's ChatML, the default model) would drop them
silently, so the calls are written into the text in the Hermes convention instead: the definitions in the
system message inside ``<tools>``, each call as ``<tool_call>{"name", "arguments"}</tool_call>`` in the
assistant's content, and each result as a user turn inside ``<tool_response>``. Either way the assistant
turns, calls included, are what training learns. The messages are checked first (``data.tool_calls``).
"""

from __future__ import annotations

import json
from typing import Any

TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": '
    "<args-json-object>}}\n</tool_call>"
)


def supports_tools(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template renders ``tools`` and ``tool_calls`` itself."""
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and "tools" in template and "tool_calls" in template


def template_conversation(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, tokenizer: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages, and the ``tools`` argument, to render with ``tokenizer``'s template."""
    if supports_tools(tokenizer):
        return [_native(message) for message in messages], tools or None
    written = [_written(message) for message in messages]
    return (_with_tools_prompt(written, tools) if tools else written), None


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The message's calls with their arguments decoded (validation checked they are JSON objects)."""
    return [
        {"name": call["function"]["name"], "arguments": json.loads(call["function"]["arguments"])}
        for call in message.get("tool_calls") or []
    ]


def _native(message: dict[str, Any]) -> dict[str, Any]:
    out = {**message, "content": message.get("content") or ""}
    if "tool_calls" in message:
        out["tool_calls"] = [
            {"id": call["id"], "type": "function", "function": decoded}
            for call, decoded in zip(message["tool_calls"], _calls(message), strict=True)
        ]
    return out


def _written(message: dict[str, Any]) -> dict[str, Any]:
    if message["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{message['content']}\n</tool_response>"}
    if "tool_calls" not in message:
        return message
    calls = "\n".join(f"<tool_call>\n{json.dumps(call)}\n</tool_call>" for call in _calls(message))
    content = message.get("content") or ""
    rest = {key: value for key, value in message.items() if key not in ("tool_calls", "content")}
    return {**rest, "content": f"{content}\n{calls}" if content else calls}


def _with_tools_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    prompt = TOOLS_PROMPT.format(tools="\n".join(json.dumps(tool) for tool in tools))
    if messages and messages[0]["role"] == "system":
        first = messages[0]
        return [{**first, "content": f"{first['content']}\n\n{prompt}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]
