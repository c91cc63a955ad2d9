"""Function calling in chat examples, checked as OpenAI defines it: ``tools``, ``tool_calls``, the tool role.

An example may carry ``"tools": [{"type": "function", "function": {"name", "description"?, "parameters"?}}]``;
an assistant message may carry ``"tool_calls": [{"id", "type": "function", "function": {"name",
"arguments"}}]`` (``arguments`` is a JSON object encoded as a string, and ``content`` may then be missing or
null); a ``{"role": "tool", "tool_call_id", "content"}`` message answers an earlier call. Each check returns
``(code, detail)`` pairs that ``diablo_core.data.datasets`` turns into line-numbered problems.
"""

from __future__ import annotations

import json
import re
from typing import Any

from diablo_core.data.jsonl import TooDeepError, parse_line, shorten

Finding = tuple[str, str]
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TOOL_KEYS = {"type", "function"}
FUNCTION_KEYS = {"name", "description", "parameters", "strict"}
CALL_KEYS = {"id", "type", "function"}
CALL_FUNCTION_KEYS = {"name", "arguments"}


def tools_findings(tools: Any) -> tuple[list[Finding], set[str]]:
    """Problems of an example's ``tools`` list, and the function names it defines."""
    if not isinstance(tools, list):
        return [("invalid_tools", "'tools' must be a list of function definitions")], set()
    findings: list[Finding] = []
    names: set[str] = set()
    for index, tool in enumerate(tools, start=1):
        problem = _tool_problem(tool)
        if problem is None and tool["function"]["name"] in names:
            problem = f"function {tool['function']['name']!r} is defined twice"
        if problem is not None:
            findings.append(("invalid_tool", f"tool {index}: {problem}"))
        else:
            names.add(tool["function"]["name"])
    return findings, names


def _tool_problem(tool: Any) -> str | None:
    if not isinstance(tool, dict) or set(tool) - TOOL_KEYS or tool.get("type") != "function":
        return 'must be {"type": "function", "function": {...}}'
    function = tool.get("function")
    if not isinstance(function, dict):
        return "'function' must be an object with a 'name'"
    if extra := sorted(set(function) - FUNCTION_KEYS):
        return f"'function' has unknown key '{shorten(extra[0])}'"
    if problem := _name_problem(function.get("name")):
        return problem
    if "description" in function and not isinstance(function["description"], str):
        return "'function.description' must be a string"
    if "parameters" in function and not isinstance(function["parameters"], dict):
        return "'function.parameters' must be a JSON schema object"
    if "strict" in function and not isinstance(function["strict"], bool):
        return "'function.strict' must be true or false"
    return None


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or FUNCTION_NAME.fullmatch(name) is None:
        return "'function.name' must be 1 to 64 letters, digits, '_' or '-'"
    return None


def tool_calls_findings(
    where: str, tool_calls: Any, defined: set[str] | None, max_depth: int
) -> tuple[list[Finding], list[str]]:
    """Problems of an assistant message's ``tool_calls``, and the call ids it makes.

    ``defined`` holds the example's function names, or is None when the example has no ``tools``.
    """
    if not isinstance(tool_calls, list) or not tool_calls:
        return [("invalid_tool_calls", f"{where}'tool_calls' must be a non-empty list")], []
    findings: list[Finding] = []
    ids: list[str] = []
    for index, call in enumerate(tool_calls, start=1):
        problem = _call_problem(call, max_depth)
        at = f"{where}tool call {index}: "
        if problem is not None:
            findings.append(("invalid_tool_calls", at + problem))
            continue
        name = call["function"]["name"]
        if defined is not None and name not in defined:
            findings.append(("unknown_tool", f"{at}function '{shorten(name)}' is not defined in 'tools'"))
        ids.append(call["id"])
    return findings, ids


def _call_problem(call: Any, max_depth: int) -> str | None:
    if not isinstance(call, dict) or set(call) - CALL_KEYS or call.get("type", "function") != "function":
        return 'must be {"id", "type": "function", "function": {"name", "arguments"}}'
    if not isinstance(call.get("id"), str) or not call["id"]:
        return "'id' must be a non-empty string"
    function = call.get("function")
    if not isinstance(function, dict) or set(function) - CALL_FUNCTION_KEYS:
        return "'function' must be an object with 'name' and 'arguments'"
    if problem := _name_problem(function.get("name")):
        return problem
    arguments = function.get("arguments")
    if not isinstance(arguments, str) or not isinstance(_arguments(arguments, max_depth), dict):
        return "'function.arguments' must be a string holding a JSON object"
    return None


def _arguments(text: str, max_depth: int) -> Any:
    """The decoded arguments, or None when they are not JSON (or nest too deep)."""
    try:
        return parse_line(text.encode(), text, max_depth)
    except (json.JSONDecodeError, TooDeepError):
        return None


def tool_message_findings(where: str, message: dict[str, Any], call_ids: set[str]) -> list[Finding]:
    """Problems of a tool message: its ``tool_call_id`` must name an earlier call of the conversation."""
    call_id = message.get("tool_call_id")
    if "tool_call_id" not in message:
        return [("missing_tool_call_id", f"{where}'tool_call_id' is missing")]
    if not isinstance(call_id, str):
        return [("invalid_tool_call_id", f"{where}'tool_call_id' must be a string")]
    if call_id not in call_ids:
        detail = f"{where}'tool_call_id' {shorten(repr(call_id))} answers no earlier tool call"
        return [("unknown_tool_call_id", detail)]
    return []
