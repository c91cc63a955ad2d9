"""benchmarks/auto_tasks.py: its tasks, and the two "auto" specs it compares (uncapped unless asked)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.auto_tasks import in_words, make_task, specs, tasks


def test_numbers_in_words() -> None:
    assert in_words(0) == "zero"
    assert in_words(7) == "seven"
    assert in_words(13) == "thirteen"
    assert in_words(40) == "forty"
    assert in_words(342) == "three hundred forty-two"
    assert in_words(900) == "nine hundred"


def test_generated_tasks_are_distinct_and_correct() -> None:
    examples = make_task("reverse", 50, seed=1)
    questions = [example["messages"][0]["content"] for example in examples]
    assert len(set(questions)) == 50
    for example in examples:
        word = example["messages"][0]["content"].rsplit(" ", 1)[1]
        assert example["messages"][1]["content"] == word[::-1]


def test_multiplication_products_are_right() -> None:
    examples = make_task("multiply", 60, seed=1)
    assert len({example["messages"][0]["content"] for example in examples}) == 60
    for example in examples:
        words = example["messages"][0]["content"].split()  # Multiply 47 by 6. Reply ...
        left, right = int(words[1]), int(words[3].rstrip("."))
        assert 10 <= left < 100 and 2 <= right <= 9
        assert example["messages"][1]["content"] == str(left * right)


def test_specs_are_uncapped_by_default() -> None:
    chosen = specs(400)
    today, auto = chosen["today"], chosen["auto"]
    assert today.max_steps is None and auto.max_steps is None
    assert today.learning_rate == 5e-4 and today.validation_holdout == 0
    assert today.early_stopping_patience is None
    assert today.total_steps(400) == 75  # 3 epochs of 25 batches of 16
    assert auto.learning_rate == "auto" and auto.validation_holdout == 20
    assert auto.early_stopping_patience == 4
    assert auto.total_steps(400 - 20) == 2 * 72  # the bound: twice the rule's 3 epochs of 24 batches
    # today's warm-up: the paper's 100, a tenth of a run not longer than it; auto's: a tenth of its bound
    assert (today.warmup_steps, auto.warmup_steps) == (7, 14)


def test_a_cap_caps_both_variants() -> None:
    capped = specs(400, max_steps=30)
    assert {spec.max_steps for spec in capped.values()} == {30}
    assert {spec.warmup_steps for spec in capped.values()} == {3}


def test_data_directory_is_read_as_the_task(tmp_path: Path) -> None:
    rows = make_task("words", 5, seed=2)
    for name, part in (("train.jsonl", rows[:3]), ("test.jsonl", rows[3:])):
        (tmp_path / name).write_text("".join(json.dumps(row) + "\n" for row in part))
    chosen = tasks(argparse.Namespace(data=tmp_path, tasks=["reverse"], train=1, test=1))
    assert list(chosen) == [tmp_path.name]
    train, test = chosen[tmp_path.name]
    assert [len(train), len(test)] == [3, 2]
    assert test[0]["messages"] == rows[3]["messages"]
