"""Exact-match accuracy of DiaBlo vs LoRA at matched parameter counts, equal steps and schedule, over seeds.

Used by ``train_throughput.py --accuracy`` and run on its own for the seeded comparison (#16). Both adapters
train with the same loop (AdamW, linear decay after a warm-up of a tenth of the steps, gradient clipping 1.0,
dropout 0.05, the same shuffled batches for the same seed) and are scored by greedy exact match on the task's
``test.jsonl``. Tasks: ``arithmetic`` (``data/arithmetic``, written by ``examples/arithmetic/generate.py``)
and ``words`` (write 0-999 in English words, ``benchmarks/auto_tasks.py``'s generator: 800 train and the other
200 numbers as test, written to ``data/words`` on first use).

A seed fixes the batch order, LoRA's random initialisation and the dropout masks; one seed gives both methods
the same batches, so the per-seed difference is paired. Learning rates: one given rate for both, or by
default each method's own, as the service resolves "auto" (DiaBlo ``5e-4 * (64 / b)^0.7`` by block size,
LoRA 3e-4, docs/lora.md). Reported: every run, each method's mean with a 95% t-interval over the seeds, and
the paired difference DiaBlo - LoRA with its interval.

    python examples/arithmetic/generate.py --out data/arithmetic --train 2000 --test 200 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/train_accuracy.py --task arithmetic words --seeds 0 1 2 \
        --steps 40 --batch-size 16 --limit 100 --precision bf16 --json accuracy.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_variants import diablo_count, matched_rank, with_lora
from diablo_core.data.datasets import read_examples
from diablo_core.data.tokenization import TokenizedExample, tokenize_examples
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.models.loading import load_base_model
from diablo_core.spec.auto import auto_learning_rate
from diablo_core.spec.job import LORA_BASE_LEARNING_RATE
from diablo_core.training.loss import accumulate_gradients
from diablo_core.training.mixed_precision import hold_in_precision
from diablo_core.training.schedule import build_scheduler

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("diablo", "lora-matched")
TASKS = {"arithmetic": 8, "words": 16}  # task -> greedy tokens per answer ("nine hundred ninety-nine")
WORDS_TRAIN, WORDS_TEST = 800, 200  # every number 0-999 once: the test numbers are never trained on
NUM_BLOCKS = 64


def _evaluate_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "arithmetic_evaluate", ROOT / "examples/arithmetic/evaluate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fit(
    model: Any,
    examples: list[TokenizedExample],
    steps: int,
    lr: float,
    batch_size: int,
    pad: int,
    seed: int = 0,
    precision: str = "fp32",
) -> None:
    """The shared training loop: identical batches (for one ``seed``) and schedule for every adapter.

    ``precision`` (resolved) holds the model as the service trains it (``hold_in_precision``).
    """
    hold_in_precision(model, precision)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    scheduler = build_scheduler(optimizer, "linear", max(1, steps // 10), steps)
    order: list[int] = []
    model.train()
    for step in range(steps):
        if len(order) < batch_size:
            generator = torch.Generator().manual_seed(seed * 1_000_003 + step)  # seed 0: the original order
            order += torch.randperm(len(examples), generator=generator).tolist()
        batch, order = [examples[i] for i in order[:batch_size]], order[batch_size:]
        accumulate_gradients(model, batch, batch_size, pad, "cpu", precision)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def default_learning_rate(variant: str, hidden_size: int) -> float:
    """The rate the service's "auto" gives ``variant``: DiaBlo's by block size, LoRA's fixed 3e-4."""
    if variant == "diablo":
        return auto_learning_rate(hidden_size, NUM_BLOCKS)
    return LORA_BASE_LEARNING_RATE


def compare_accuracy(
    steps: int,
    lr: float | None,
    batch_size: int,
    data_dir: Path = ROOT / "data/arithmetic",
    limit: int | None = None,
    quantization: str | None = None,
    seed: int = 0,
    precision: str = "fp32",
    max_new_tokens: int = 8,
    methods: tuple[str, ...] = METHODS,
) -> dict[str, dict[str, Any]]:
    """Trains DiaBlo (N=64) and matched-rank LoRA; returns their exact match (and which test questions they
    answered right), parameter counts, learning rate and train time.

    ``lr`` None gives each method its own default rate (``default_learning_rate``). With
    ``quantization="nf4"`` both train on the NF4 base, LoRA then being QLoRA. ``methods`` picks a subset
    (a learning-rate check of one method).
    """
    evaluate = _evaluate_module()
    results = {}
    for variant in methods:
        loaded = load_base_model("default", quantization=quantization)
        model, tokenizer = loaded.model, loaded.tokenizer
        torch.manual_seed(seed)  # LoRA's initialisation and the dropout masks
        if variant == "diablo":
            apply_diablo(model, DiaBloConfig(num_blocks=NUM_BLOCKS, dropout=0.05))
        else:
            model = with_lora(model, matched_rank(model, diablo_count(model)), dropout=0.05)
        rate = lr if lr is not None else default_learning_rate(variant, loaded.model.config.hidden_size)
        examples = tokenize_examples(read_examples(data_dir / "train.jsonl"), tokenizer, 256)
        started = time.perf_counter()
        fit(model, examples, steps, rate, batch_size, tokenizer.pad_token_id, seed, precision)
        seconds = time.perf_counter() - started
        questions = evaluate.read_questions(data_dir / "test.jsonl")[:limit]
        prompts = [messages for messages, _ in questions]
        answers = evaluate.greedy_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
        correct = [
            i
            for i, (answer, (_, expected)) in enumerate(zip(answers, questions, strict=True))
            if answer == expected
        ]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        results[variant] = {
            "exact_match": len(correct) / len(questions), "trainable": trainable, "learning_rate": rate,
            "train_seconds": round(seconds, 1), "correct": correct,
        }  # fmt: skip
        print(json.dumps({variant: results[variant]}), flush=True)
    return results


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (bisection on its CDF)."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 2 values (df >= 1), got df={df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(x: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))

    def cdf(x: float, intervals: int = 4000) -> float:  # Simpson's rule from 0
        h = x / intervals
        inner = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, intervals))
        return 0.5 + h / 3 * (density(0.0) + inner + density(x))

    low, high = 0.0, 100.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < 0.975 else (low, middle)
    return (low + high) / 2


def mean_interval(values: list[float]) -> dict[str, float]:
    """Mean and the half-width of its 95% t-interval (``values`` are per-seed results)."""
    mean = statistics.fmean(values)
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "ci95": half, "low": mean - half, "high": mean + half}


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task: each method's per-seed exact match, mean and 95% interval, and the paired DiaBlo - LoRA."""
    summary: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(run["task"] for run in runs):
        by_seed = {run["seed"]: run["results"] for run in runs if run["task"] == task}
        seeds = sorted(by_seed)
        row: dict[str, Any] = {"seeds": seeds}
        for method in METHODS:
            values = [by_seed[seed][method]["exact_match"] for seed in seeds]
            row[method] = {"per_seed": values} | mean_interval(values)
        differences = [
            by_seed[seed]["diablo"]["exact_match"] - by_seed[seed]["lora-matched"]["exact_match"]
            for seed in seeds
        ]
        row["diablo_minus_lora"] = {"per_seed": differences} | mean_interval(differences)
        summary[task] = row
    return summary


def task_data(task: str, data_root: Path) -> Path:
    """The task's data directory, writing the generated ``words`` task there on first use."""
    directory = data_root / task
    if task == "arithmetic":
        if not (directory / "train.jsonl").is_file():
            raise SystemExit(
                f"no {directory}/train.jsonl: run examples/arithmetic/generate.py --out {directory} "
                "--train 2000 --test 200 --seed 0"
            )
        return directory
    if not (directory / "test.jsonl").is_file():
        from benchmarks.auto_tasks import make_task  # it imports this module

        examples = make_task(task, WORDS_TRAIN + WORDS_TEST, seed=1)
        directory.mkdir(parents=True, exist_ok=True)
        for name, rows in (("train", examples[:WORDS_TRAIN]), ("test", examples[WORDS_TRAIN:])):
            (directory / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", nargs="+", choices=sorted(TASKS), default=["arithmetic"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, help="score only the first N test questions")
    parser.add_argument("--lr", type=float, help="one rate for both methods (default: each method's own)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--quantization", choices=("nf4", "int8"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=ROOT / "data")
    parser.add_argument("--json", type=Path, help="append each run as a JSON line, then the summary")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    for task in args.task:
        data_dir = task_data(task, args.data_root)
        for seed in args.seeds:
            results = compare_accuracy(
                args.steps, args.lr, args.batch_size, data_dir, args.limit, args.quantization, seed,
                args.precision, TASKS[task], tuple(args.methods),
            )  # fmt: skip
            runs.append({"task": task, "seed": seed, "results": results})
            if args.json:
                with args.json.open("a") as out:
                    out.write(json.dumps(runs[-1]) + "\n")
    if len(args.seeds) > 1 and set(args.methods) == set(METHODS):
        summary = summarize(runs)
        print(json.dumps(summary, indent=2))
        if args.json:
            with args.json.open("a") as out:
                out.write(json.dumps({"summary": summary}) + "\n")


if __name__ == "__main__":
    main()
