"""The torch-free TemplateTokenizer gives the tokens (and labels) transformers' tokenizer gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from diablo_core.data.datasets import validate_dataset
from diablo_core.data.preferences import count_preference_tokens, tokenize_preference
from diablo_core.data.template_tokenizer import TemplateTokenizer, context_length, fingerprint
from diablo_core.data.tokenization import count_example_tokens, tokenize_example
from diablo_core.models.loading import default_gguf_path
from tests.core.test_tool_calls import TOOL_CHAT, TOOLS_TEMPLATE
from tests.core.tiny_tokenizer import make_tiny_tokenizer
from tests.fresh_imports import heavy_modules_loaded

WEIGHTED = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "5", "weight": 0},
        {"role": "user", "content": "Again: 2 + 2? ünïcödé ✓ <b>&</b>"},
        {"role": "assistant", "content": "4"},
    ]
}
EXAMPLES: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    WEIGHTED,
    {"prompt": "Q: capital of France?\nA:", "completion": " Paris"},
    TOOL_CHAT,
]
PAIR = {
    "input": {"messages": [{"role": "user", "content": "Say hi"}]},
    "preferred_output": [{"role": "assistant", "content": "Hi!"}],
    "non_preferred_output": [{"role": "assistant", "content": "No."}],
}


def saved(tokenizer: Any, directory: Path, context: int | None = 512) -> Path:
    tokenizer.save_pretrained(directory)
    if context is not None:
        (directory / "config.json").write_text(json.dumps({"max_position_embeddings": context}))
    return directory


def assert_same_tokens(reference: Any, light: TemplateTokenizer) -> None:
    for example in EXAMPLES:
        expected, got = tokenize_example(example, reference, None), tokenize_example(example, light, None)
        assert got.input_ids == expected.input_ids
        assert got.labels == expected.labels  # weight 0 turns stay unlearned alike
        assert count_example_tokens(example, light) == len(expected.input_ids)  # one render counts alike
    assert tokenize_preference(PAIR, light, None) == tokenize_preference(PAIR, reference, None)
    pair = tokenize_preference(PAIR, reference, None)
    assert count_preference_tokens(PAIR, light) == (len(pair.chosen.input_ids), len(pair.rejected.input_ids))


@pytest.mark.parametrize("template", [None, TOOLS_TEMPLATE], ids=["chatml", "tools"])
def test_the_tiny_tokenizer_counts_alike(tmp_path: Path, template: str | None) -> None:
    reference = make_tiny_tokenizer() if template is None else make_tiny_tokenizer(template)
    light = TemplateTokenizer.from_directory(saved(reference, tmp_path))
    assert light.eos_token == reference.eos_token and light.eos_token_id == reference.eos_token_id
    assert_same_tokens(AutoTokenizer.from_pretrained(tmp_path), light)


@pytest.mark.slow
def test_the_default_models_tokenizer_counts_alike(tmp_path: Path) -> None:
    """SmolLM2's real tokenizer and template, read from the packaged GGUF as the model converter does."""
    gguf = default_gguf_path()
    reference = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    light = TemplateTokenizer.from_directory(saved(reference, tmp_path))
    assert_same_tokens(AutoTokenizer.from_pretrained(tmp_path), light)


def test_the_report_names_each_new_longest_line(tmp_path: Path) -> None:
    light = TemplateTokenizer.from_directory(saved(make_tiny_tokenizer(), tmp_path))
    lengths = [5, 3, 40, 12, 41, 2]
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x" * n}]}
        for n in lengths
    ]
    data = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    report = validate_dataset(data.replace(b"\n", b"\n\n", 1), tokenizer=light)  # a blank line 2
    tokens = [len(tokenize_example(row, light, None).input_ids) for row in rows]
    assert report.longest_lines == [(1, tokens[0]), (4, tokens[2]), (6, tokens[4])]
    assert (report.max_example_tokens, report.num_tokens) == (tokens[4], sum(tokens))
    # Counting alone (no labels) reports what tokenizing for training does.
    tokenized: list[Any] = []
    labelled = validate_dataset(data, tokenizer=light, tokenized=tokenized)
    assert (labelled.longest_lines, labelled.num_tokens) == (
        [(1, tokens[0]), (3, tokens[2]), (5, tokens[4])],
        sum(tokens),
    )
    assert [len(example.input_ids) for example in tokenized] == tokens


def test_a_template_runs_sandboxed_and_may_refuse(tmp_path: Path) -> None:
    escape = "{{ messages.__class__.__mro__ }}"
    light = TemplateTokenizer.from_directory(saved(make_tiny_tokenizer(escape), tmp_path))
    with pytest.raises(Exception, match="unsafe"):
        light.apply_chat_template([{"role": "user", "content": "x"}])
    refusing = "{{ raise_exception('roles must alternate') }}"
    light = TemplateTokenizer.from_directory(saved(make_tiny_tokenizer(refusing), tmp_path / "b"))
    with pytest.raises(Exception, match="roles must alternate"):
        light.apply_chat_template([{"role": "user", "content": "x"}])


def test_context_and_fingerprint_follow_the_files(tmp_path: Path) -> None:
    directory = saved(make_tiny_tokenizer(), tmp_path, context=2048)
    assert context_length(directory) == 2048
    before = fingerprint(directory)
    (directory / "config.json").write_text(json.dumps({"max_position_embeddings": 4096, "pad": 1}))
    assert context_length(directory) == 4096 and fingerprint(directory) != before
    (directory / "config.json").unlink()
    assert context_length(directory) is None


def test_the_template_tokenizer_imports_neither_torch_nor_transformers() -> None:
    assert heavy_modules_loaded(["diablo_core.data.template_tokenizer", "diablo_core.data.datasets"]) == []
