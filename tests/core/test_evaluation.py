"""Evaluation on held-out chat examples: the scoring rules, reading a file, batched greedy answers, and the
training loop's evaluations (``eval_exact_match``, ``eval_contains``, the best adapter by exact match)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from diablo_core.data.tokenization import tokenize_example
from diablo_core.errors import DatasetError
from diablo_core.evaluation.answers import evaluate_answers
from diablo_core.evaluation.examples import (
    ANSWER_MARGIN_TOKENS,
    EvalExample,
    answer_budget,
    eval_example,
    read_eval_examples,
    score_answer,
    summarize,
)
from diablo_core.generation.batched import greedy_batch
from diablo_core.generation.decoding import build_prompt_ids, generate
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.methods.lora.model import apply_lora
from diablo_core.training.best import BEST_FILE, BestTracker
from diablo_core.training.loop import TrainingConfig, train
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_tiny_model(len(tokenizer), seed=0)


@pytest.mark.parametrize(
    ("answer", "reference", "exact", "contains"),
    [
        ("42", "42", True, True),
        ("  42\n", "42 ", True, True),  # surrounding whitespace is stripped on both sides
        ("The answer is 42.", "42", False, True),
        ("4 2", "42", False, False),
        ("Paris", "paris", False, False),  # case counts
        ("", "42", False, False),
        ("anything", "   ", False, True),  # an empty reference is contained in every answer
    ],
)
def test_scoring_rules(answer: str, reference: str, exact: bool, contains: bool) -> None:
    sample = score_answer(answer, reference, line=3)
    assert (sample.exact_match, sample.contains, sample.line) == (exact, contains, 3)


def test_summary_rates() -> None:
    samples = [score_answer(a, r) for a, r in [("1", "1"), ("x 2", "2"), ("3", "4"), ("5", "5")]]
    result = summarize(samples)
    assert (result.exact_match, result.contains, result.n) == (0.5, 0.75, 4)
    assert result.to_dict(max_samples=1)["samples"] == [
        {"line": 0, "reference": "1", "answer": "1", "exact_match": True, "contains": True}
    ]
    assert summarize([]).metrics() == {"exact_match": 0.0, "contains": 0.0}


def test_the_prompt_is_every_message_before_the_last_assistant_message() -> None:
    example = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "1+1"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": "2+2"},
            {"role": "assistant", "content": "4"},
        ]
    }
    got = eval_example(example, line=7)
    assert (len(got.messages), got.messages[-1]["content"], got.reference, got.line) == (4, "2+2", "4", 7)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reading_a_file_keeps_line_numbers(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "eval.jsonl", [json.dumps(chat("a", "1")), "", json.dumps(chat("b", "2"))])
    examples = read_eval_examples(path)
    assert [(e.line, e.reference) for e in examples] == [(1, "1"), (3, "2")]


@pytest.mark.parametrize(
    ("lines", "code", "needle"),
    [
        ([json.dumps(chat("a", "1")), "{not json"], "invalid_evaluation_file", "line 2: not valid JSON"),
        (
            [json.dumps({"messages": [{"role": "user", "content": "no answer"}]})],
            "invalid_evaluation_file",
            "line 1: no assistant message",
        ),
        (
            [json.dumps(chat("a", "1")), json.dumps({"messages": [{"role": "assistant", "content": "x"}]})],
            "invalid_evaluation_file",
            "line 2: an evaluation example needs messages before a last assistant message",
        ),
        (
            [json.dumps({"prompt": "a", "completion": "b"})],
            "invalid_evaluation_file",
            "line 1: an evaluation",
        ),
        ([], "invalid_evaluation_file", "no examples"),
        ([json.dumps(chat(str(i), "x")) for i in range(4)], "evaluation_file_too_large", "more than 3"),
    ],
)
def test_bad_files_are_refused_with_line_numbers(
    tmp_path: Path, lines: list[str], code: str, needle: str
) -> None:
    path = write_lines(tmp_path / "eval.jsonl", lines)
    with pytest.raises(DatasetError) as error:
        read_eval_examples(path, max_examples=3)
    assert error.value.code == code and needle in error.value.message


def test_batched_greedy_answers_equal_answers_alone(model, tokenizer) -> None:
    chats = [
        [{"role": "user", "content": text}] for text in ("hi", "a much longer question, padded less", "x")
    ]
    budgets = [9, 4, 14]
    together = greedy_batch(
        model, tokenizer, [build_prompt_ids(tokenizer, messages=m) for m in chats], budgets
    )
    alone = [
        generate(model, tokenizer, messages=m, max_new_tokens=b) for m, b in zip(chats, budgets, strict=True)
    ]
    assert together == alone
    assert [r.completion_tokens for r in together] == budgets


def test_evaluate_answers_scores_the_models_own_answers(model, tokenizer) -> None:
    prompts = [[{"role": "user", "content": text}] for text in ("one", "two", "three")]
    own = [generate(model, tokenizer, messages=m, max_new_tokens=6).text for m in prompts]
    # The budget is the reference's tokens plus a margin, so the model's answer runs on past it.
    examples = [
        EvalExample(m, text, line=i + 1) for i, (m, text) in enumerate(zip(prompts, own, strict=True))
    ]
    examples.append(EvalExample(prompts[0], "never said", line=4))
    result = evaluate_answers(model, tokenizer, examples, batch_size=2)
    assert result.n == 4 and [s.contains for s in result.samples] == [True, True, True, False]
    budget = answer_budget(len(tokenizer(own[0], add_special_tokens=False)["input_ids"]))
    longer = generate(model, tokenizer, messages=prompts[0], max_new_tokens=budget).text
    assert result.samples[0].answer == longer and ANSWER_MARGIN_TOKENS > 0
    assert result.contains == 0.75
    assert evaluate_answers(model, tokenizer, examples, max_examples=1).n == 1


def test_evaluate_answers_restores_training_mode(model, tokenizer) -> None:
    model.train()
    evaluate_answers(model, tokenizer, [EvalExample([{"role": "user", "content": "a"}], "b")])
    assert model.training
    model.eval()


def constant_task(count: int, seed: int) -> list[dict]:
    """Four random letters asked, "ok" answered: a tiny model learns it in a few steps."""
    rng = random.Random(seed)
    return [chat("".join(rng.choice("abcdefgh") for _ in range(4)), "ok") for _ in range(count)]


def test_training_reports_answer_metrics_and_keeps_the_best_exact_match(tmp_path: Path, tokenizer) -> None:
    model = make_tiny_model(len(tokenizer), seed=0)
    apply_diablo(model, DiaBloConfig(num_blocks=8))
    held = constant_task(4, seed=1)
    seen: list[dict] = []

    class Recorder:
        def on_eval(self, step: int, metrics: dict) -> None:
            seen.append({"step": step, **metrics})

    config = TrainingConfig(
        learning_rate=1e-2, max_steps=8, batch_size=8, warmup_steps=0, eval_every=1, checkpoint_every=4
    )
    result = train(
        model,
        tokenizer,
        [tokenize_example(e, tokenizer) for e in constant_task(16, seed=0)],
        config,
        valid_examples=[tokenize_example(e, tokenizer) for e in held],
        eval_answers=[eval_example(e, i + 1) for i, e in enumerate(held)],
        output_dir=tmp_path / "run",
        callbacks=[Recorder()],
    )
    evals = [r for r in result.history if "eval_exact_match" in r]
    assert [r["step"] for r in evals] == list(range(1, 9)) and {"eval_loss", "eval_contains"} <= evals[
        0
    ].keys()
    assert evals[0]["eval_exact_match"] == 0.0 and evals[-1]["eval_exact_match"] == 1.0
    assert [s["exact_match"] for s in seen] == [r["eval_exact_match"] for r in evals]
    # The best: the highest exact match, ties to the lower validation loss.
    top = max(r["eval_exact_match"] for r in evals)
    best = min((r for r in evals if r["eval_exact_match"] == top), key=lambda r: r["eval_loss"])
    assert (result.best_step, result.best_exact_match, result.best_eval_loss) == (
        best["step"],
        top,
        best["eval_loss"],
    )
    note = json.loads((result.best_adapter_dir / BEST_FILE).read_text())
    assert note == {"step": best["step"], "eval_loss": best["eval_loss"], "eval_exact_match": top}
    checkpoint = json.loads((tmp_path / "run" / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert "eval_exact_match" in json.dumps(checkpoint)


def test_tracker_by_answers_ranks_exact_match_then_loss() -> None:
    tracker = BestTracker(patience=2, by_answers=True)
    observed = [(1, 2.0, 0.0), (2, 1.0, 0.5), (3, 0.5, 0.25), (4, 0.9, 0.5), (5, 0.95, 0.5)]
    assert [tracker.observe(*args) for args in observed] == [True, True, False, True, False]
    assert (tracker.best_step, tracker.best_exact_match, tracker.exhausted) == (4, 0.5, False)
    history = [{"step": s, "eval_loss": loss, "eval_exact_match": em} for s, loss, em in observed]
    again = BestTracker.from_history(2, history, by_answers=True)
    assert (again.best_step, again.since_best) == (4, 1)
    no_loss = BestTracker(None, by_answers=True)
    assert [no_loss.observe(s, None, em) for s, em in [(1, 0.5), (2, 0.5), (3, 0.75)]] == [True, False, True]
    assert no_loss.finite_loss is None and not no_loss.exhausted


def test_a_lora_run_answers_its_evaluation_examples_too(tmp_path: Path, tokenizer) -> None:
    model = make_tiny_model(len(tokenizer), seed=0)
    apply_lora(model, LoRAConfig(rank=4, dropout=0.1))  # dropout: answers are decoded in eval mode
    held = constant_task(2, seed=1)
    config = TrainingConfig(learning_rate=1e-2, max_steps=2, batch_size=4, warmup_steps=0, eval_every=1)
    train_set = [tokenize_example(e, tokenizer) for e in constant_task(4, seed=0)]
    answers = [eval_example(e, i + 1) for i, e in enumerate(held)]
    result = train(model, tokenizer, train_set, config, eval_answers=answers, output_dir=tmp_path / "lora")
    evals = [r for r in result.history if "eval_exact_match" in r]
    assert [r["step"] for r in evals] == [1, 2] and "eval_loss" not in evals[0]
    assert result.best_step in (1, 2) and result.best_eval_loss is None and model.training is False
