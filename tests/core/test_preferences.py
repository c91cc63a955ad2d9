"""OpenAI's preference format: line-numbered validation with stable codes, format detection, pair tokens."""

from __future__ import annotations

import json

import pytest

from diablo_core.data.datasets import CHAT, PREFERENCE, file_format, validate_dataset
from diablo_core.data.preferences import PreferencePair, tokenize_preference
from diablo_core.data.tokenization import IGNORE_INDEX
from tests.core.tiny_tokenizer import make_tiny_tokenizer

CHAT_LINE = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}


def pair(prompt: str = "Name: fox", good: str = "Yes fox", bad: str = "fox", **changes) -> dict:
    line = {
        "input": {"messages": [{"role": "user", "content": prompt}]},
        "preferred_output": [{"role": "assistant", "content": good}],
        "non_preferred_output": [{"role": "assistant", "content": bad}],
    }
    return {**line, **changes}


def jsonl(*rows: dict) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def test_valid_preference_file_is_recognised():
    report = validate_dataset(jsonl(pair(), pair("Name: owl", "Yes owl", "owl")))
    assert report.ok and report.format == PREFERENCE and report.num_examples == 2
    assert file_format(jsonl(pair())) == PREFERENCE
    assert file_format(jsonl(CHAT_LINE)) == CHAT


BAD = [
    (pair(extra=1), "unknown_key", "line 2: unknown key 'extra'"),
    ({k: v for k, v in pair().items() if k != "input"}, "invalid_input", "line 2: 'input' must be an object"),
    (pair(input={"messages": "hi"}), "invalid_input", "'input' must be an object with a list of 'messages'"),
    (
        pair(input={"messages": [{"role": "robot", "content": "x"}]}),
        "unknown_role",
        "input message 1: unknown",
    ),
    (
        pair(input={"messages": [{"role": "user"}]}),
        "missing_content",
        "input message 1: 'content' is missing",
    ),
    ({k: v for k, v in pair().items() if k != "preferred_output"}, "missing_preferred_output", "is missing"),
    (pair(preferred_output=[]), "invalid_preferred_output", "'preferred_output' must be a list holding one"),
    (
        pair(non_preferred_output=[{"role": "user", "content": "x"}]),
        "invalid_non_preferred_output",
        "'non_preferred_output' must be a list holding one assistant message",
    ),
    (
        pair(preferred_output=[{"role": "assistant", "content": 3}]),
        "content_not_string",
        "preferred_output 1: 'content' must be a string",
    ),
]


@pytest.mark.parametrize(("line", "code", "message"), BAD)
def test_each_preference_problem_has_line_and_code(line, code, message):
    report = validate_dataset(jsonl(pair(), line))
    assert [p.code for p in report.problems] == [code]
    assert report.problems[0].line == 2 and message in report.problems[0].message


def test_a_file_mixing_chat_and_preference_lines_is_refused_at_the_switch():
    report = validate_dataset(jsonl(CHAT_LINE, pair()))
    assert [(p.line, p.code) for p in report.problems] == [(2, "mixed_formats")]
    assert "preference format but the file started in chat format" in report.problems[0].message


def test_pairs_share_the_prompt_and_learn_only_their_answer():
    tokenizer = make_tiny_tokenizer()
    line = pair()
    line["input"]["messages"].append({"role": "assistant", "content": "earlier answer"})
    line["input"]["messages"].append({"role": "user", "content": "again"})
    tokens = tokenize_preference(line, tokenizer, max_length=None)
    learned = [
        tokenizer.decode(
            [t for t, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE_INDEX]
        )
        for ex in (tokens.chosen, tokens.rejected)
    ]
    assert learned == ["Yes fox<|im_end|>", "fox<|im_end|>"]
    prefix = len(tokens.rejected.input_ids) - len(tokenizer("fox<|im_end|>\n")["input_ids"])
    assert tokens.chosen.input_ids[:prefix] == tokens.rejected.input_ids[:prefix]


def test_token_counts_and_too_long_use_the_longer_sequence():
    tokenizer = make_tiny_tokenizer()
    kept: list = []
    report = validate_dataset(jsonl(pair()), tokenizer=tokenizer, tokenized=kept)
    (tokens,) = kept
    assert isinstance(tokens, PreferencePair)
    assert report.num_tokens == tokens.num_tokens and report.max_example_tokens == len(
        tokens.chosen.input_ids
    )
    short = validate_dataset(jsonl(pair()), tokenizer=tokenizer, max_length=tokens.longest - 1)
    assert [p.code for p in short.problems] == ["too_long"]
