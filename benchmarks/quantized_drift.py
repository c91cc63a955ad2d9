"""How far greedy answers move when an adapter trained on the NF4 base is served on the full-precision one.

Trains DiaBlo (N=64, the default targets) for ``--steps`` steps on the NF4 default model with the arithmetic
example's data, then answers ``--questions`` test questions greedily three ways: the NF4 base with the
adapter (as trained), the full-precision base with the same adapter (``allow_quantization_mismatch=True``,
the QLoRA-style choice), and the two bases alone. Reports exact match of each and the fraction of answers
that are identical between NF4 and full precision.

    python examples/arithmetic/generate.py --out data/arithmetic --train 2000 --test 200 --seed 0
    OMP_NUM_THREADS=1 python benchmarks/quantized_drift.py --steps 60 --questions 100
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_accuracy import _evaluate_module
from diablo_core.data.datasets import read_examples
from diablo_core.data.tokenization import tokenize_examples
from diablo_core.methods.diablo.adapter_io import load_adapter
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.models.loading import load_base_model
from diablo_core.training.loop import TrainingConfig, train


def scores(answers: list[str], expected: list[str]) -> float:
    return sum(a == e for a, e in zip(answers, expected, strict=True)) / len(expected)


def same(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/arithmetic"))
    parser.add_argument("--output", type=Path, default=Path("data/arithmetic/nf4-drift"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nf4 = load_base_model("default", quantization="nf4")
    apply_diablo(nf4.model, DiaBloConfig(num_blocks=64))
    train_set = tokenize_examples(read_examples(args.data / "train.jsonl"), nf4.tokenizer, 256)
    config = TrainingConfig(learning_rate=args.lr, max_steps=args.steps, batch_size=16, warmup_steps=6)
    result = train(nf4.model, nf4.tokenizer, train_set, config, output_dir=args.output)
    evaluate = _evaluate_module()  # examples/arithmetic/evaluate.py
    greedy_answers = evaluate.greedy_answers
    questions = evaluate.read_questions(args.data / "test.jsonl")[: args.questions]
    prompts, expected = [m for m, _ in questions], [e for _, e in questions]
    answers = {"nf4+adapter": greedy_answers(nf4.model, nf4.tokenizer, prompts)}
    full = load_base_model("default")
    answers["fp32 base"] = greedy_answers(full.model, full.tokenizer, prompts)
    load_adapter(full.model, result.adapter_dir, allow_quantization_mismatch=True)
    answers["fp32+adapter"] = greedy_answers(full.model, full.tokenizer, prompts)
    plain_nf4 = load_base_model("default", quantization="nf4")
    answers["nf4 base"] = greedy_answers(plain_nf4.model, plain_nf4.tokenizer, prompts)
    report = {
        "steps": args.steps,
        "final_train_loss": result.train_loss,
        "exact_match": {name: scores(a, expected) for name, a in answers.items()},
        "identical_answers": {
            "adapter: nf4 vs fp32 base": same(answers["nf4+adapter"], answers["fp32+adapter"]),
            "no adapter: nf4 vs fp32 base": same(answers["nf4 base"], answers["fp32 base"]),
        },
        "examples": [
            {"expected": e, "nf4+adapter": a, "fp32+adapter": b}
            for e, a, b in list(zip(expected, answers["nf4+adapter"], answers["fp32+adapter"], strict=True))[
                :5
            ]
        ],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
