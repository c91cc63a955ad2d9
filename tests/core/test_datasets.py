import json
import time

import pytest

from diablo_core.data.datasets import DatasetLimits, read_examples, validate_dataset
from diablo_core.data.tokenization import tokenize_example, tokenize_examples
from diablo_core.errors import DatasetError
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
        {"messages": [{"role": "robot", "content": "x"}, assistant()]},
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
    # OpenAI's weight is the integer 0 or 1: JSON's true (equal to 1 in Python) and 1.0 are refused.
    ({"messages": [user(), assistant(weight=True)]}, "invalid_weight", "line 2: message 2: 'weight' must be"),
    ({"messages": [user(), assistant(weight=1.0)]}, "invalid_weight", "line 2: message 2: 'weight' must be"),
    (
        {"messages": [{**user(), "weight": 1}, assistant()]},
        "invalid_weight",
        "line 2: message 1: 'weight' must be",
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


def test_validation_can_keep_the_tokenized_examples_of_its_one_pass():
    """What a worker trains on: the examples tokenized while validating equal a separate read + tokenize."""
    tokenizer = make_tiny_tokenizer()
    long_chat = {"messages": [user("x" * 200), assistant()]}
    data = jsonl(GOOD_CHAT, long_chat, GOOD_CHAT)
    kept: list = []
    assert validate_dataset(data, tokenizer=tokenizer, max_length=500, tokenized=kept).ok
    assert kept == tokenize_examples(read_examples(data), tokenizer, 500)
    only_valid: list = []
    assert not validate_dataset(data, tokenizer=tokenizer, max_length=100, tokenized=only_valid).ok
    assert only_valid == tokenize_examples([GOOD_CHAT, GOOD_CHAT], tokenizer, 100)


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


def nested(depth: int) -> str:
    """A JSON array nested ``depth`` deep."""
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "line",
    [nested(100_000), "[" * 100_000, '{"a": ' * 50_000 + "1" + "}" * 50_000],
    ids=["arrays", "unclosed", "objects"],
)
def test_deep_nesting_is_a_line_numbered_problem_not_a_crash(line):
    report = validate_dataset(jsonl(GOOD_CHAT, line, GOOD_CHAT))

    assert [(p.line, p.code) for p in report.problems] == [(2, "json_too_deep")]
    assert report.problems[0].message == "line 2: JSON nests deeper than 32 levels of arrays and objects"


def test_nesting_is_bounded_by_the_limit_and_brackets_in_strings_do_not_count():
    limits = DatasetLimits(max_json_depth=5)
    brackets = {"messages": [user('[[[[[[{{{{{{ \\" [['), assistant()]}
    at_limit = {**GOOD_CHAT, "x": json.loads(nested(4))}  # the line's object, then 4 arrays: 5 deep
    over = {**GOOD_CHAT, "x": json.loads(nested(5))}

    report = validate_dataset(jsonl(brackets, at_limit, over), limits=limits)

    assert [(p.line, p.code) for p in report.problems] == [(2, "unknown_key"), (3, "json_too_deep")]
    assert validate_dataset(jsonl(over)).problems[0].code == "unknown_key"  # the default allows 32


def test_turns_per_example_are_bounded():
    limits = DatasetLimits(max_turns_per_example=4)
    four = {"messages": [user(), assistant()] * 2}
    five = {"messages": [user(), assistant()] * 2 + [user()]}

    report = validate_dataset(jsonl(four, five), limits=limits)

    assert [(p.line, p.code) for p in report.problems] == [(2, "too_many_turns")]
    assert (
        report.problems[0].message
        == "line 2: 'messages' has 5 messages, more than the limit of 4 per example"
    )
    with pytest.raises(DatasetError, match="more than the limit of 4 per example"):
        read_examples(jsonl(four, five), limits)


def test_echoed_user_text_is_shortened():
    giant = "k" * 1_000_000
    rows = [
        {**GOOD_CHAT, giant: 1},
        {"messages": [{"role": giant, "content": "x"}, assistant()]},
        {**GOOD_CHAT, **{f"key{i}": i for i in range(10_000)}},
    ]

    report = validate_dataset(jsonl(*rows))

    assert [(p.line, p.code) for p in report.problems] == [
        (1, "unknown_key"),
        (2, "unknown_role"),
        (3, "unknown_key"),
    ]
    assert all(len(p.message) < 300 for p in report.problems)
    assert report.problems[0].message == f"line 1: unknown key '{'k' * 64}…'"
    assert report.problems[2].message == "line 3: unknown keys 'key0', 'key1', 'key10' (and 9997 more)"


def test_read_examples_keeps_only_the_first_problems():
    with pytest.raises(DatasetError) as caught:
        read_examples(jsonl(*["nope"] * 50_000))

    assert str(caught.value).endswith("line 5: not valid JSON (Expecting value at column 1) (and 49995 more)")
    assert len(str(caught.value)) < 1000


def seconds_per_mib(data: bytes) -> float:
    """Least CPU time per MiB over three validations of ``data`` fed in 64 KiB chunks, as an upload is."""
    chunks = [data[i : i + (1 << 16)] for i in range(0, len(data), 1 << 16)]
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        validate_dataset(chunks)
        best = min(best, time.process_time() - started)
    return best / (len(data) / (1 << 20))


@pytest.mark.parametrize("shape", ["one_line", "many_lines"])
def test_validation_time_per_mib_is_flat_across_sizes(shape):
    # A ratio of CPU time per MiB at 8x the size, not a wall-clock limit: linear work keeps it near 1, while
    # re-copying a growing line per chunk (the old splitter) made it about 8.
    def make(mib: int) -> bytes:
        if shape == "one_line":
            return jsonl({"messages": [user("a" * (mib << 20)), assistant()]})
        line = jsonl(GOOD_PC)
        return line * ((mib << 20) // len(line))

    small, large = (seconds_per_mib(make(mib)) for mib in (4, 32))
    print(f"{shape}: {small * 1000:.1f} ms/MiB at 4 MiB, {large * 1000:.1f} ms/MiB at 32 MiB")
    assert large / small < 3
