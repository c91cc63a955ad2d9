import json

import pytest

from diablo_core.datasets import read_examples, validate_dataset
from diablo_core.errors import DatasetError
from diablo_core.tokenization import tokenize_example
from tests.core.tiny_tokenizer import make_tiny_tokenizer

GOOD_CHAT = {"messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "5"}]}
GOOD_PC = {"prompt": "2+3=", "completion": " 5"}


def jsonl(*rows) -> bytes:
    """Rows given as dicts are dumped; bytes and str are taken as the raw line."""
    lines = [
        row if isinstance(row, bytes) else (row if isinstance(row, str) else json.dumps(row)).encode()
        for row in rows
    ]
    return b"\n".join(lines) + b"\n"


def user(content="hi"):
    return {"role": "user", "content": content}


def assistant(content="ok", **extra):
    return {"role": "assistant", "content": content, **extra}


BAD_LINES = [
    (b"\xff\xfe{}", "invalid_utf8", "line 2: not valid UTF-8 at byte 0"),
    ('{"messages": [', "invalid_json", "line 2: not valid JSON"),
    ("[1, 2]", "not_an_object", "line 2: each line must be a JSON object"),
    ({"text": "hi"}, "missing_messages", "line 2: 'messages' is missing"),
    ({"messages": "hi"}, "messages_not_list", "line 2: 'messages' must be a list"),
    ({"messages": ["hi", assistant()]}, "message_not_object", "line 2: message 1: must be an object"),
    ({"messages": [{"content": "hi"}, assistant()]}, "missing_role", "line 2: message 1: 'role' is missing"),
    (
        {"messages": [user(), {"role": "assistant"}]},
        "missing_content",
        "line 2: message 2: 'content' is missing",
    ),
    (
        {"messages": [{"role": "tool", "content": "x"}, assistant()]},
        "unknown_role",
        "line 2: message 1: unknown",
    ),
    ({"messages": [user(), assistant(extra=1)]}, "unknown_key", "line 2: message 2: unknown key 'extra'"),
    ({"messages": [user(), assistant()], "id": 3}, "unknown_key", "line 2: unknown key 'id'"),
    ({"messages": [user(), assistant(content=5)]}, "content_not_string", "line 2: message 2: 'content' must"),
    ({"messages": [user()]}, "no_assistant_message", "line 2: no assistant message"),
    ({"messages": [user(), assistant(weight=0)]}, "no_assistant_message", "line 2: no assistant message"),
    (
        {"messages": [user(), assistant(weight=2)]},
        "invalid_weight",
        "line 2: message 2: 'weight' must be 0 or 1",
    ),
    ({"messages": [user(), assistant(name=1)]}, "invalid_name", "line 2: message 2: 'name' must be a string"),
    ({"completion": "x"}, "missing_prompt", "line 2: 'prompt' is missing"),
    ({"prompt": "x"}, "missing_completion", "line 2: 'completion' is missing"),
    ({"prompt": "x", "completion": None}, "content_not_string", "line 2: 'completion' must be a string"),
]


@pytest.mark.parametrize(("line", "code", "message"), BAD_LINES, ids=[case[1] for case in BAD_LINES])
def test_each_problem_class_is_reported_with_line_and_code(line, code, message):
    first = GOOD_PC if isinstance(line, dict) and ("prompt" in line or "completion" in line) else GOOD_CHAT

    report = validate_dataset(jsonl(first, line))

    assert not report.ok
    assert [(p.line, p.code) for p in report.problems] == [(2, code)]
    assert report.problems[0].message.startswith(message)


def test_valid_chat_file_with_names_weights_and_blank_lines(tmp_path):
    rows = [GOOD_CHAT, "", {"messages": [user(), assistant(weight=0), assistant(name="bot", weight=1)]}, "  "]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl(*rows) + b"\n\n")

    report = validate_dataset(path)

    assert report.ok and report.problems == []
    assert (report.format, report.num_examples, report.num_tokens) == ("chat", 2, None)
    assert len(read_examples(path)) == 2


def test_line_numbers_count_blank_lines_and_crlf():
    data = jsonl(GOOD_CHAT, "", GOOD_CHAT, "not json").replace(b"\n", b"\r\n")

    report = validate_dataset(data)

    assert [(p.line, p.code) for p in report.problems] == [(4, "invalid_json")]


def test_mixed_formats_reported_at_the_line_that_switches():
    report = validate_dataset(jsonl(GOOD_PC, GOOD_PC, GOOD_CHAT))

    assert report.format == "prompt_completion"
    assert [(p.line, p.code) for p in report.problems] == [(3, "mixed_formats")]


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_empty_file(data):
    report = validate_dataset(data)

    assert [(p.line, p.code) for p in report.problems] == [(0, "empty_file")]
    assert (report.format, report.num_examples) == ("unknown", 0)


def test_token_stats_and_too_long():
    tokenizer = make_tiny_tokenizer()
    long_chat = {"messages": [user("x" * 200), assistant()]}
    lengths = [len(tokenize_example(row, tokenizer, None).input_ids) for row in (GOOD_CHAT, long_chat)]

    report = validate_dataset(jsonl(GOOD_CHAT, long_chat), tokenizer=tokenizer, max_length=100)

    assert report.num_tokens == sum(lengths)
    assert report.max_example_tokens == max(lengths)
    assert [(p.line, p.code) for p in report.problems] == [(2, "too_long")]
    assert f"{lengths[1]} tokens, more than max_length 100" in report.problems[0].message
    assert validate_dataset(jsonl(GOOD_CHAT, long_chat), tokenizer=tokenizer).ok


def test_template_that_rejects_an_example_is_a_problem():
    tokenizer = make_tiny_tokenizer(chat_template="{{ raise_exception('roles must alternate') }}")

    report = validate_dataset(jsonl(GOOD_CHAT), tokenizer=tokenizer)

    assert [(p.line, p.code) for p in report.problems] == [(1, "template_error")]
    assert "roles must alternate" in report.problems[0].message


def test_streams_from_chunks_split_anywhere(tmp_path):
    data = jsonl(GOOD_CHAT, "{bad", GOOD_CHAT, {"messages": [user("é" * 5)]})
    path = tmp_path / "data.jsonl"
    path.write_bytes(data)
    chunks = (data[i : i + 7] for i in range(0, len(data), 7))  # splits lines and multi-byte characters

    reports = [validate_dataset(source) for source in (data, chunks, path, str(path))]

    expected = [(2, "invalid_json"), (4, "no_assistant_message")]
    assert all([(p.line, p.code) for p in r.problems] == expected for r in reports)
    assert all(r.num_examples == 4 for r in reports)


def test_max_problems_caps_the_list_but_counts_all():
    report = validate_dataset(jsonl(*["nope"] * 10), max_problems=3)

    assert [p.line for p in report.problems] == [1, 2, 3]
    assert report.num_problems == 10 and not report.ok


def test_read_examples_returns_dicts_or_raises_with_first_problems():
    assert read_examples(jsonl(GOOD_PC, GOOD_PC)) == [GOOD_PC, GOOD_PC]

    with pytest.raises(DatasetError) as caught:
        read_examples(jsonl(GOOD_CHAT, {"messages": [user()]}, GOOD_PC))

    assert caught.value.code == "invalid_training_file"
    assert "line 2: no assistant message" in str(caught.value)
    assert "line 3: example is in prompt_completion format" in str(caught.value)
