"""bf16 against fp32 through ``diablo_core.train`` on the arithmetic example, in one process, taking turns.

Each run loads the default model (``--model``) afresh (fp32), applies DiaBlo (N=64, dropout 0.05),
and trains the same batches (same seed) for ``--steps`` steps at the README's settings (learning rate
2e-3, batch 16) with ``precision`` fp32 or bf16. The runs alternate (fp32, bf16, bf16, fp32, ...) so slow
drifts of a shared machine's load fall on both. Reported per run: process CPU time of the ``train`` call
(one torch thread, so barely affected by other processes), its wall time in steps, and the per-step
losses; then the median bf16/fp32 CPU ratio over rounds and the largest per-step loss difference.

    .venv/bin/python examples/arithmetic/generate.py --out data/arithmetic --train 2000 --test 200 --seed 0
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision_train.py --steps 12 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from diablo_core.data.datasets import read_examples
from diablo_core.data.tokenization import tokenize_examples
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.models.loading import load_base_model
from diablo_core.spec.training import TrainingConfig
from diablo_core.training.loop import train

PRECISIONS = ("fp32", "bf16")


def run_once(precision: str, args: argparse.Namespace) -> dict[str, Any]:
    """One training run: ``{"precision", "cpu_s", "train_s", "losses", "resolved"}``."""
    loaded = load_base_model(args.model, data_dir=args.data_dir)
    apply_diablo(loaded.model, DiaBloConfig(num_blocks=64, dropout=0.05))
    rows = read_examples(Path(args.data) / "train.jsonl")[: args.steps * args.batch_size]
    examples = tokenize_examples(rows, loaded.tokenizer, max_length=None)
    config = TrainingConfig(
        learning_rate=2e-3,
        max_steps=args.steps,
        batch_size=args.batch_size,
        warmup_steps=max(1, args.steps // 10),
        seed=0,
        precision=precision,
    )
    with tempfile.TemporaryDirectory() as output_dir:
        cpu = time.process_time()
        result = train(loaded.model, loaded.tokenizer, examples, config, output_dir=Path(output_dir))
        cpu = time.process_time() - cpu
    losses = [record["loss"] for record in result.history if "loss" in record]
    return {
        "precision": precision,
        "resolved": result.precision,
        "cpu_s": cpu,
        "train_s": result.train_seconds,
        "losses": losses,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median bf16/fp32 CPU ratio over rounds (pairs in run order) and the largest loss difference."""
    fp32 = [run for run in runs if run["precision"] == "fp32"]
    bf16 = [run for run in runs if run["precision"] == "bf16"]
    ratios = [b["cpu_s"] / f["cpu_s"] for f, b in zip(fp32, bf16, strict=True)]
    pairs = zip(fp32, bf16, strict=True)
    gaps = [abs(a - b) for f, b16 in pairs for a, b in zip(f["losses"], b16["losses"], strict=True)]
    return {
        "cpu_ratio_bf16_over_fp32": statistics.median(ratios),
        "cpu_ratios": ratios,
        "max_loss_difference": max(gaps),
        "final_losses": {run["precision"]: run["losses"][-1] for run in runs},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="the default model, or a checkpoint folder")
    parser.add_argument("--data", default="data/arithmetic")
    parser.add_argument("--data-dir", default="data", help="where the converted default model is kept")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for round_index in range(args.rounds):
        order = PRECISIONS if round_index % 2 == 0 else PRECISIONS[::-1]
        for precision in order:
            runs.append(run_once(precision, args))
            print(json.dumps({key: runs[-1][key] for key in ("precision", "resolved", "cpu_s", "train_s")}))
    summary = summarize(runs)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
