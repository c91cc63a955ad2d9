"""Streaming validation and loading of JSONL fine-tuning files in OpenAI's three formats.

Chat: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str, "name"?: str,
"weight"?: 0|1}], "tools"?: [...]}`` (``weight``: OpenAI's integer, on assistant messages) with function
calling as OpenAI defines it (``diablo_core.data.tool_calls``).
Prompt/completion: ``{"prompt": str, "completion": str}``. Preference (DPO): ``{"input": {"messages": [...]},
"preferred_output": [assistant message], "non_preferred_output": [assistant message]}``.
Files are read line by line, never whole, and every
problem is reported with its 1-based line number and a stable code (line 0 for whole-file problems). The work
is linear in the file's size: lines are split in linear time, nesting and turns are bounded
(``DatasetLimits``) and messages echo at most a short fragment of the user's text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from diablo_core.data.jsonl import FRAGMENT_CHARS, Source, TooDeepError, parse_line, read_lines, shorten
from diablo_core.data.preferences import OUTPUT_KEYS, PREFERENCE_KEYS, example_tokens, is_preference
from diablo_core.data.tool_calls import Finding, tool_calls_findings, tool_message_findings, tools_findings
from diablo_core.errors import DatasetError

CHAT = "chat"
PROMPT_COMPLETION = "prompt_completion"
PREFERENCE = "preference"
UNKNOWN = "unknown"
ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id"}
CHAT_KEYS = {"messages", "tools"}
# Defaults of the service's DIABLO_MAX_JSON_DEPTH and DIABLO_MAX_TURNS_PER_EXAMPLE: a chat line nests 3 deep,
# and 512 messages is far past real conversations while bounding a template's prefix renders (tokenization).
MAX_JSON_DEPTH = 32
MAX_TURNS_PER_EXAMPLE = 512
# Problems kept by ``read_examples`` for its error message (the rest are counted).
SHOWN_PROBLEMS = 5
# Unknown keys named per problem; the rest are counted.
SHOWN_KEYS = 3


@dataclass(frozen=True)
class DatasetLimits:
    """Bounds on the shape of one example, checked line by line."""

    max_json_depth: int = MAX_JSON_DEPTH
    max_turns_per_example: int = MAX_TURNS_PER_EXAMPLE


DEFAULT_LIMITS = DatasetLimits()


@dataclass
class DatasetProblem:
    """One problem found in a dataset file."""

    line: int
    code: str
    message: str


@dataclass
class DatasetReport:
    """What validation found.

    Attributes:
        format: ``"chat"``, ``"prompt_completion"`` or ``"unknown"`` (no valid example).
        num_examples: Non-blank lines in the file.
        num_tokens: Total tokens over valid examples (untruncated), when a tokenizer was given.
        problems: The first ``max_problems`` problems.
        num_problems: Every problem found, including those not kept.
        max_example_tokens: Tokens in the longest valid example, when a tokenizer was given.
        longest_lines: ``(line, tokens)`` of each valid example longer than every one before it, in order
            (the last is the longest): the first line over any limit is the first entry over it.
    """

    format: str
    num_examples: int
    num_tokens: int | None
    problems: list[DatasetProblem] = field(default_factory=list)
    num_problems: int = 0
    max_example_tokens: int | None = None
    longest_lines: list[tuple[int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return self.num_problems == 0


def validate_dataset(
    source: Source,
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    max_problems: int = 100,
    limits: DatasetLimits = DEFAULT_LIMITS,
    tokenized: list[Any] | None = None,
) -> DatasetReport:
    """Validate a JSONL dataset without loading it whole.

    Args:
        source: A file path, the file's bytes, or an iterable of byte chunks (chunks need not end at lines).
        tokenizer: When given, examples are tokenized to count tokens and find ``too_long`` ones.
        max_length: Token limit per example (needs ``tokenizer``).
        max_problems: Keep at most this many problems (all are still counted).
        limits: Nesting depth and turns allowed per example.
        tokenized: When given (with ``tokenizer``), each valid example's tokens are appended to it (a
            ``TokenizedExample``, or a ``PreferencePair`` for preference lines), so a caller that trains on
            a valid file reads and tokenizes it once.

    Returns:
        The report with format, counts and problems.
    """
    report = DatasetReport(format=UNKNOWN, num_examples=0, num_tokens=0 if tokenizer is not None else None)

    def add(problems: list[DatasetProblem]) -> None:
        report.num_problems += len(problems)
        report.problems.extend(problems[: max(0, max_problems - len(report.problems))])

    for line_no, example, problems in _scan(source, limits):
        report.num_examples += 1
        if example is not None:
            problems = problems or _check_format(report, line_no, example)
        if example is not None and not problems and tokenizer is not None:
            problems = _count_tokens(report, line_no, example, tokenizer, max_length, tokenized)
        add(problems)
    if report.num_examples == 0:
        add([DatasetProblem(0, "empty_file", "the file contains no examples")])
    return report


def read_examples(source: Source, limits: DatasetLimits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """Parse a valid JSONL dataset into its examples.

    Raises:
        DatasetError: With code ``invalid_training_file`` naming the first problems, if any.
    """
    examples, problems, count = [], [], 0
    report = DatasetReport(format=UNKNOWN, num_examples=0, num_tokens=None)
    for line_no, example, line_problems in _scan(source, limits):
        if example is not None and not line_problems:
            line_problems = _check_format(report, line_no, example)
        count += len(line_problems)
        problems.extend(line_problems[: SHOWN_PROBLEMS - len(problems)])
        examples.append(example)
    if not examples:
        count, problems = 1, [DatasetProblem(0, "empty_file", "the file contains no examples")]
    if count:
        shown = "; ".join(problem.message for problem in problems)
        more = f" (and {count - len(problems)} more)" if count > len(problems) else ""
        raise DatasetError(f"invalid dataset: {shown}{more}", code="invalid_training_file")
    return examples


def scan_examples(
    source: Source, limits: DatasetLimits = DEFAULT_LIMITS
) -> Iterator[tuple[int, dict[str, Any] | None, list[DatasetProblem]]]:
    """Yield ``(line number, example or None, problems)`` for every non-blank line, formats checked as
    ``validate_dataset`` checks them (for readers that keep each example's line number)."""
    report = DatasetReport(format=UNKNOWN, num_examples=0, num_tokens=None)
    for line_no, example, problems in _scan(source, limits):
        if example is not None and not problems:
            problems = _check_format(report, line_no, example)
        yield line_no, example, problems


def _scan(
    source: Source, limits: DatasetLimits
) -> Iterator[tuple[int, dict[str, Any] | None, list[DatasetProblem]]]:
    """Yield ``(line number, example or None, problems)`` for every non-blank line."""
    for line_no, raw in enumerate(read_lines(source), start=1):
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield line_no, None, [_problem(line_no, "invalid_utf8", f"not valid UTF-8 at byte {error.start}")]
            continue
        if not text.strip():
            continue
        try:
            value = parse_line(raw, text, limits.max_json_depth)
        except TooDeepError:
            detail = f"JSON nests deeper than {limits.max_json_depth} levels of arrays and objects"
            yield line_no, None, [_problem(line_no, "json_too_deep", detail)]
            continue
        except json.JSONDecodeError as error:
            detail = f"not valid JSON ({error.msg} at column {error.colno})"
            yield line_no, None, [_problem(line_no, "invalid_json", detail)]
            continue
        if not isinstance(value, dict):
            yield line_no, None, [_problem(line_no, "not_an_object", "each line must be a JSON object")]
            continue
        yield line_no, value, _example_problems(line_no, value, limits)


def _problem(line_no: int, code: str, detail: str) -> DatasetProblem:
    return DatasetProblem(line_no, code, f"line {line_no}: {detail}")


def _example_problems(line_no: int, example: dict[str, Any], limits: DatasetLimits) -> list[DatasetProblem]:
    """Problems of one parsed object, checked against the format its keys announce."""
    if "messages" in example:
        return _chat_problems(line_no, example, limits)
    if is_preference(example):
        return _preference_problems(line_no, example, limits.max_turns_per_example)
    if "prompt" in example or "completion" in example:
        return _prompt_completion_problems(line_no, example)
    return [_problem(line_no, "missing_messages", "'messages' is missing")]


def _unknown_keys(line_no: int, value: dict[str, Any], allowed: set[str], where: str) -> list[DatasetProblem]:
    """One problem naming the first few unknown keys (shortened) and counting the rest."""
    extra = sorted(set(value) - allowed)
    if not extra:
        return []
    named = ", ".join(f"'{shorten(key)}'" for key in extra[:SHOWN_KEYS])
    more = f" (and {len(extra) - SHOWN_KEYS} more)" if len(extra) > SHOWN_KEYS else ""
    plural = "s" if len(extra) > 1 else ""
    return [_problem(line_no, "unknown_key", f"{where}unknown key{plural} {named}{more}")]


def _chat_problems(line_no: int, example: dict[str, Any], limits: DatasetLimits) -> list[DatasetProblem]:
    problems = _unknown_keys(line_no, example, CHAT_KEYS, "")
    defined: set[str] | None = None
    if "tools" in example:
        findings, defined = tools_findings(example["tools"])
        problems.extend(_problems(line_no, findings))
    messages, max_turns = example["messages"], limits.max_turns_per_example
    if not isinstance(messages, list):
        return [*problems, _problem(line_no, "messages_not_list", "'messages' must be a list of messages")]
    if len(messages) > max_turns:
        detail = f"'messages' has {len(messages)} messages, more than the limit of {max_turns} per example"
        return [*problems, _problem(line_no, "too_many_turns", detail)]
    call_ids: set[str] = set()
    for index, message in enumerate(messages, start=1):
        problems.extend(_message_problems(line_no, index, message))
        if isinstance(message, dict):
            findings = _tool_findings(index, message, defined, call_ids, limits.max_json_depth)
            problems.extend(_problems(line_no, findings))
    learned = [
        m for m in messages if isinstance(m, dict) and m.get("role") == "assistant" and m.get("weight") != 0
    ]
    if not learned:
        problems.append(_problem(line_no, "no_assistant_message", "no assistant message to learn from"))
    return problems


def _problems(line_no: int, findings: list[Finding]) -> list[DatasetProblem]:
    return [_problem(line_no, code, detail) for code, detail in findings]


def _tool_findings(
    index: int, message: dict[str, Any], defined: set[str] | None, call_ids: set[str], max_depth: int
) -> list[Finding]:
    """Function-calling problems of one message; the ids of the calls it makes join ``call_ids``."""
    where, role = f"message {index}: ", message.get("role")
    if "tool_calls" in message and role != "assistant":
        return [("invalid_tool_calls", f"{where}'tool_calls' is only allowed on assistant messages")]
    if "tool_call_id" in message and role != "tool":
        return [("invalid_tool_call_id", f"{where}'tool_call_id' is only allowed on tool messages")]
    if role == "tool":
        return tool_message_findings(where, message, call_ids)
    if "tool_calls" not in message:
        return []
    findings, ids = tool_calls_findings(where, message["tool_calls"], defined, max_depth)
    call_ids.update(ids)
    return findings


def _message_problems(line_no: int, index: int, message: Any, label: str = "message") -> list[DatasetProblem]:
    where = f"{label} {index}: "
    if not isinstance(message, dict):
        return [
            _problem(line_no, "message_not_object", f"{where}must be an object with 'role' and 'content'")
        ]
    problems = _unknown_keys(line_no, message, MESSAGE_KEYS, where)
    role = message.get("role")
    if "role" not in message:
        problems.append(_problem(line_no, "missing_role", f"{where}'role' is missing"))
    elif role not in ROLES:
        detail = f"{where}unknown role {shorten(repr(role))}, expected {ROLES}"
        problems.append(_problem(line_no, "unknown_role", detail))
    calls = role == "assistant" and "tool_calls" in message  # content may then be missing or null
    if "content" not in message and not calls:
        problems.append(_problem(line_no, "missing_content", f"{where}'content' is missing"))
    elif not isinstance(message.get("content"), str) and not (calls and message.get("content") is None):
        problems.append(_problem(line_no, "content_not_string", f"{where}'content' must be a string"))
    if "name" in message and not isinstance(message["name"], str):
        problems.append(_problem(line_no, "invalid_name", f"{where}'name' must be a string"))
    weight = message.get("weight")
    if "weight" in message and (role != "assistant" or type(weight) is not int or weight not in (0, 1)):
        detail = "'weight' must be 0 or 1 and is only allowed on assistant messages"
        problems.append(_problem(line_no, "invalid_weight", where + detail))
    return problems


def _preference_problems(line_no: int, example: dict[str, Any], max_turns: int) -> list[DatasetProblem]:
    """A preference line: ``input.messages`` as in a chat line (without an answer), one assistant message
    in each of ``preferred_output`` and ``non_preferred_output``."""
    problems = _unknown_keys(line_no, example, set(PREFERENCE_KEYS), "")
    prompt = example.get("input")
    if not isinstance(prompt, dict) or not isinstance(prompt.get("messages"), list):
        detail = "'input' must be an object with a list of 'messages'"
        problems.append(_problem(line_no, "invalid_input", detail))
    else:
        problems.extend(_unknown_keys(line_no, prompt, {"messages"}, "input: "))
        if len(prompt["messages"]) > max_turns:
            detail = (
                f"'input.messages' has {len(prompt['messages'])} messages, more than the limit of {max_turns}"
            )
            problems.append(_problem(line_no, "too_many_turns", detail))
        else:
            for index, message in enumerate(prompt["messages"], start=1):
                problems.extend(_message_problems(line_no, index, message, "input message"))
    for key in OUTPUT_KEYS:
        problems.extend(_output_problems(line_no, example, key))
    return problems


def _output_problems(line_no: int, example: dict[str, Any], key: str) -> list[DatasetProblem]:
    if key not in example:
        return [_problem(line_no, f"missing_{key}", f"'{key}' is missing")]
    output = example[key]
    valid = isinstance(output, list) and len(output) == 1 and isinstance(output[0], dict)
    if not valid or output[0].get("role") != "assistant" or "weight" in output[0]:
        detail = f"'{key}' must be a list holding one assistant message (role and content, no weight)"
        return [_problem(line_no, f"invalid_{key}", detail)]
    return _message_problems(line_no, 1, output[0], key)


def _prompt_completion_problems(line_no: int, example: dict[str, Any]) -> list[DatasetProblem]:
    problems = _unknown_keys(line_no, example, {"prompt", "completion"}, "")
    for key in ("prompt", "completion"):
        if key not in example:
            problems.append(_problem(line_no, f"missing_{key}", f"'{key}' is missing"))
        elif not isinstance(example[key], str):
            problems.append(_problem(line_no, "content_not_string", f"'{key}' must be a string"))
    return problems


def _check_format(report: DatasetReport, line_no: int, example: dict[str, Any]) -> list[DatasetProblem]:
    """Fix the dataset's format at its first valid example; later examples must share it."""
    found = _announced_format(example)
    if report.format == UNKNOWN:
        report.format = found
    if found == report.format:
        return []
    detail = f"example is in {found} format but the file started in {report.format} format"
    return [_problem(line_no, "mixed_formats", detail)]


def _announced_format(example: dict[str, Any]) -> str:
    if "messages" in example:
        return CHAT
    return PREFERENCE if is_preference(example) else PROMPT_COMPLETION


def file_format(source: Source, limits: DatasetLimits = DEFAULT_LIMITS) -> str:
    """The format of a file's first valid example (``"unknown"`` when there is none).

    Upload validation refuses files that mix formats, so for an uploaded file this is the whole file's.
    """
    for _, example, problems in _scan(source, limits):
        if example is not None and not problems:
            return _announced_format(example)
    return UNKNOWN


def _count_tokens(
    report: DatasetReport,
    line_no: int,
    example: dict[str, Any],
    tokenizer: Any,
    max_length: int | None,
    tokenized: list[Any] | None,
) -> list[DatasetProblem]:
    """Add the example's tokens to the report (and to ``tokenized``); a problem past ``max_length``.

    Without ``tokenized`` only the counts are needed, and they come from one render of the example.
    """
    try:
        tokens, lengths = example_tokens(example, tokenizer, labels=tokenized is not None)
    except Exception as error:  # a chat template may reject a conversation (e.g. roles not alternating)
        detail = f"the chat template cannot render this example: {shorten(str(error), 4 * FRAGMENT_CHARS)}"
        return [_problem(line_no, "template_error", detail)]
    longest = max(lengths)
    report.num_tokens = (report.num_tokens or 0) + sum(lengths)
    if longest > (report.max_example_tokens or 0):
        report.longest_lines.append((line_no, longest))
    report.max_example_tokens = max(report.max_example_tokens or 0, longest)
    if max_length is None or longest <= max_length:
        if tokenized is not None:
            tokenized.append(tokens)
        return []
    return [_problem(line_no, "too_long", f"example has {longest} tokens, more than max_length {max_length}")]
