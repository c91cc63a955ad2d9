"""What one evaluation of an evaluation file costs: greedy answers to held-out arithmetic questions, decoded
in batches (as jobs, the library and ``python -m diablo_core eval`` do) and one at a time.

    python benchmarks/eval_cost.py --model default --examples 64 --batch-sizes 1,8 [--json out.json]

The questions are the arithmetic example's ("What is 123 + 456?" -> "579", fixed seed). Each batch size runs
once after an untimed warm-up; the answers of every batch size are compared with those of the first.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from diablo_core.evaluation.answers import evaluate_answers
from diablo_core.evaluation.examples import EvalExample
from diablo_core.methods.diablo.adapter_io import load_adapter
from diablo_core.models.loading import load_base_model

SYSTEM = "Reply with the number only."


def questions(count: int, seed: int) -> list[EvalExample]:
    """``count`` addition questions of two 3-digit numbers, the sum as the reference."""
    rng = random.Random(seed)
    pairs = [(rng.randrange(100, 1000), rng.randrange(100, 1000)) for _ in range(count)]
    return [
        EvalExample(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What is {a} + {b}?"}],
            str(a + b),
            line=i + 1,
        )
        for i, (a, b) in enumerate(pairs)
    ]


def measure(
    model: Any, tokenizer: Any, examples: list[EvalExample], batch_sizes: list[int]
) -> dict[str, Any]:
    evaluate_answers(model, tokenizer, examples[:2], batch_size=2)  # warm-up, untimed
    runs, first = {}, None
    for size in batch_sizes:
        started = time.perf_counter()
        result = evaluate_answers(model, tokenizer, examples, batch_size=size)
        seconds = time.perf_counter() - started
        answers = [sample.answer for sample in result.samples]
        first = first or answers
        runs[str(size)] = {
            "seconds": round(seconds, 2),
            "exact_match": result.exact_match,
            "contains": result.contains,
            "same_answers_as_first": answers == first,
        }
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--adapter", type=Path)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    loaded = load_base_model(args.model, data_dir=args.data_dir, device=args.device)
    if args.adapter is not None:
        load_adapter(loaded.model, args.adapter)
    examples = questions(args.examples, args.seed)
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    report = {
        "model": args.model,
        "adapter": str(args.adapter) if args.adapter else None,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "examples": args.examples,
        "batch_sizes": measure(loaded.model, loaded.tokenizer, examples, sizes),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
