"""Today's "auto" against #18's "auto" on two tasks the project had never seen, through the library.

Tasks, generated here with a fixed seed: reversing a five-letter word, and writing a number (0-999) in
words. Both runs resolve the job spec as the API does from nothing but the training-example count:
"today" is the OpenAI epoch rule at the paper's 5e-4 (no hold-out, no early stopping, the last adapter);
"auto" is the new rule (learning rate by block size, 5% held out, early stopping, the best adapter). Both are
capped at ``--max-steps`` so the comparison fits a CPU; scored by greedy exact match on held-out prompts.

    PYTHONPATH=. python benchmarks/auto_tasks.py --train 200 --test 20 --max-steps 30
"""

from __future__ import annotations

import argparse
import json
import random
import string
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.train_accuracy import _evaluate_module
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
        else:
            number = rng.randrange(1000)
            question, answer = f"Write {number} in words.", in_words(number)
        if question not in seen:
            seen.add(question)
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            examples.append({"messages": messages})
    return examples


def specs(num_examples: int, max_steps: int) -> dict[str, ResolvedJobSpec]:
    """Today's "auto" (rule epochs at 5e-4) and the new one, both capped at ``max_steps``."""
    today = DiaBloHyperparameters(n_epochs=auto_epochs(num_examples), learning_rate=5e-4)
    chosen = {"today": resolve_job_spec(None, today, num_examples=num_examples)}
    chosen["auto"] = resolve_job_spec(None, None, num_examples=num_examples)
    return {
        k: v.model_copy(update={"max_steps": max_steps, "warmup_steps": max_steps // 10})
        for k, v in chosen.items()
    }


def run_variant(
    name: str, spec: ResolvedJobSpec, data: list[dict[str, Any]], test: list[dict[str, Any]]
) -> dict:
    loaded = load_base_model("default")
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
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = train(model, tokenizer, examples, training, valid_examples=valid, output_dir=Path(out))
        seconds = time.perf_counter() - started
        if result.best_adapter_dir is not None:
            load_adapter(model, result.best_adapter_dir)
    model.eval()
    questions = [example["messages"][:1] for example in test]
    answers = _evaluate_module().greedy_answers(model, tokenizer, questions, max_new_tokens=16)
    hits = sum(a == e["messages"][1]["content"] for a, e in zip(answers, test, strict=True))
    return {
        "variant": name, "learning_rate": training.learning_rate, "steps": result.steps,
        "best_step": result.best_step, "early_stopped": result.early_stopped,
        "train_seconds": round(seconds, 1),
        "exact_match": hits / len(test), "sample": answers[:3],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["reverse", "words"])
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=30)
    args = parser.parse_args()
    for task in args.tasks:
        examples = make_task(task, args.train + args.test, seed=1)
        data, test = examples[: args.train], examples[args.train :]
        for name, spec in specs(len(data), args.max_steps).items():
            print(json.dumps({"task": task} | run_variant(name, spec, data, test)), flush=True)


if __name__ == "__main__":
    main()
