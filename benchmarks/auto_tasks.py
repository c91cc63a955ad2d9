"""Today's "auto" against #18's "auto" on tasks the project had never seen, through the library.

Tasks, generated here with a fixed seed: reversing a five-letter word, writing a number (0-999) in
words, and multiplying a two-digit number by a one-digit one (2-9); or ``--data DIR`` (its ``train.jsonl``
and ``test.jsonl``, e.g. the arithmetic example's). Both runs resolve the job spec as the API does from
nothing but the training file's example count: "today" is the OpenAI epoch rule at the paper's 5e-4 and 100
warm-up steps (no hold-out, no early stopping, the last adapter); "auto" is the new rule (learning rate by
block size, 5% held out, early stopping within twice the rule's epochs, a tenth of that bound warming up,
the best adapter). Nothing is capped unless ``--max-steps`` is given. Scored by greedy exact match on
held-out prompts; each run prints one JSON line (wall and CPU seconds of training and of scoring), and its
evaluations to stderr.

Run it with one torch thread (``--threads``, default 1): on a loaded 2-core machine two intra-op threads made
a bf16 step ten times slower in wall time (docs/benchmarks.md, #18).

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/auto_tasks.py --train 400 --test 50
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/auto_tasks.py --data data/arithmetic --variants auto \
        --out-dir data/auto-arithmetic
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.train_accuracy import _evaluate_module
from diablo_core.data.datasets import read_examples
from diablo_core.data.holdout import split_holdout
from diablo_core.data.tokenization import tokenize_examples
from diablo_core.methods.diablo.adapter_io import load_adapter
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.models.loading import load_base_model
from diablo_core.spec import DiaBloHyperparameters, ResolvedJobSpec, auto_epochs, resolve_job_spec
from diablo_core.training.loop import train

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEENS = [
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TASKS = ["reverse", "words", "multiply"]
TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def in_words(number: int) -> str:
    """0-999 in English words ("three hundred forty-two")."""
    hundreds, rest = divmod(number, 100)
    head = f"{ONES[hundreds]} hundred" if hundreds else ""
    if rest == 0:
        return head or "zero"
    tens, ones = divmod(rest, 10)
    tail = (
        ONES[rest]
        if rest < 10
        else TEENS[ones]
        if tens == 1
        else TENS[tens] + (f"-{ONES[ones]}" if ones else "")
    )
    return f"{head} {tail}".strip()


def make_task(name: str, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` distinct chat examples of a task."""
    rng, seen, examples = random.Random(seed), set(), []
    while len(examples) < count:
        if name == "reverse":
            word = "".join(rng.choice(string.ascii_lowercase) for _ in range(5))
            question, answer = f"Reverse the letters of: {word}", word[::-1]
        elif name == "multiply":
            left, right = rng.randrange(10, 100), rng.randrange(2, 10)
            question, answer = f"Multiply {left} by {right}. Reply with the product only.", str(left * right)
        else:
            number = rng.randrange(1000)
            question, answer = f"Write {number} in words.", in_words(number)
        if question not in seen:
            seen.add(question)
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            examples.append({"messages": messages})
    return examples


def specs(num_examples: int, max_steps: int | None = None) -> dict[str, ResolvedJobSpec]:
    """Today's "auto" (rule epochs at 5e-4) and the new one, as the API resolves them from the example
    count; capped at ``max_steps`` (and a tenth of it warming up) only when it is given."""
    today = DiaBloHyperparameters(n_epochs=auto_epochs(num_examples), learning_rate=5e-4, warmup_steps=100)
    chosen = {"today": resolve_job_spec(None, today, num_examples=num_examples)}
    chosen["auto"] = resolve_job_spec(None, None, num_examples=num_examples)
    if max_steps is None:
        return chosen
    capped = {"max_steps": max_steps, "warmup_steps": max_steps // 10}
    return {name: spec.model_copy(update=capped) for name, spec in chosen.items()}


class EvalLog:
    """Prints each validation loss with the seconds since the run started (stderr), for long runs."""

    def __init__(self, label: str) -> None:
        self.label, self.started = label, time.perf_counter()

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        seconds = time.perf_counter() - self.started
        print(
            f"{self.label} step {step}: valid loss {metrics['loss']:.4f} ({seconds:.0f} s)", file=sys.stderr
        )


def run_variant(
    name: str,
    spec: ResolvedJobSpec,
    data: list[dict[str, Any]],
    test: list[dict[str, Any]],
    *,
    model_name: str = "default",
    out_dir: Path | None = None,
    max_new_tokens: int = 16,
) -> dict[str, Any]:
    """Train one variant (the best adapter kept when it has one) and score it on ``test``."""
    loaded = load_base_model(model_name)
    model, tokenizer = loaded.model, loaded.tokenizer
    examples = tokenize_examples(data, tokenizer, None)
    longest = max(len(example.input_ids) for example in examples)  # "auto" max_length, as the service's
    spec = spec.for_model(model.config.hidden_size).fit_max_length(
        longest, model.config.max_position_embeddings
    )
    training, diablo = spec.configs(seed=0, device="cpu")
    apply_diablo(model, diablo)
    valid = None
    if spec.validation_holdout:
        split = split_holdout(examples, spec.validation_holdout, seed=0)
        examples, valid = split.train, split.valid
    with tempfile.TemporaryDirectory() as scratch:
        output = out_dir / name if out_dir else Path(scratch)
        wall, cpu = time.perf_counter(), time.process_time()
        result = train(
            model, tokenizer, examples, training, valid_examples=valid, output_dir=output,
            callbacks=[EvalLog(name)],
        )  # fmt: skip
        train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
        if result.best_adapter_dir is not None:
            load_adapter(model, result.best_adapter_dir)
    model.eval()
    questions = [example["messages"][:-1] for example in test]
    wall, cpu = time.perf_counter(), time.process_time()
    answers = _evaluate_module().greedy_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens)
    hits = sum(a == e["messages"][-1]["content"] for a, e in zip(answers, test, strict=True))
    return {
        "variant": name, "precision": result.precision, "learning_rate": training.learning_rate,
        "warmup_steps": training.warmup_steps, "trained_on": len(examples), "held_out": len(valid or []),
        "steps": result.steps, "total_steps": result.total_steps, "best_step": result.best_step,
        "early_stopped": result.early_stopped, "train_wall_s": round(train_wall, 1),
        "train_cpu_s": round(train_cpu, 1), "step_s": round(result.train_seconds, 1),
        "score_wall_s": round(time.perf_counter() - wall, 1),
        "score_cpu_s": round(time.process_time() - cpu, 1),
        "hits": hits, "tested": len(test), "exact_match": hits / len(test), "sample": answers[:3],
    }  # fmt: skip


def tasks(args: argparse.Namespace) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Each task's (training file, test prompts): generated, or read from ``--data``."""
    if args.data is not None:
        return {
            args.data.name: (
                read_examples(args.data / "train.jsonl"),
                read_examples(args.data / "test.jsonl"),
            )
        }
    chosen = {}
    for task in args.tasks:
        examples = make_task(task, args.train + args.test, seed=1)
        chosen[task] = examples[: args.train], examples[args.train :]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["reverse", "words"], choices=TASKS)
    parser.add_argument("--data", type=Path, help="a directory with train.jsonl and test.jsonl instead")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--variants", nargs="+", default=["today", "auto"], choices=["today", "auto"])
    parser.add_argument("--max-steps", type=int, help="cap both variants (default: no cap)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--out-dir", type=Path, help="keep each run's adapters under OUT_DIR/<task>/<variant>"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for task, (data, test) in tasks(args).items():
        for name, spec in specs(len(data), args.max_steps).items():
            if name in args.variants:
                out = args.out_dir / task if args.out_dir else None
                result = run_variant(
                    name, spec, data, test, model_name=args.model, out_dir=out,
                    max_new_tokens=args.max_new_tokens,
                )  # fmt: skip
                print(json.dumps({"task": task} | result), flush=True)


if __name__ == "__main__":
    main()
