"""Writes the 3-digit addition data set: chat examples "What is 123 + 456?" -> "579".

Train and test pairs are drawn without replacement from one shuffled pool, so no (a, b) appears in both.
The same seed always writes the same files.

    python examples/arithmetic/generate.py --out data/arithmetic --train 2000 --test 200 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


SYSTEM = "Reply with the number only."


def make_example(a: int, b: int) -> dict:
    """One chat example whose answer is the sum alone (short answers are learned fastest).

    The short system message replaces the chat template's 20-token default one, so a CPU step is cheaper.
    """
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question(a, b)},
            {"role": "assistant", "content": str(a + b)},
        ]
    }


def sample_pairs(count: int, seed: int) -> list[tuple[int, int]]:
    """``count`` distinct (a, b) pairs of 3-digit numbers, in a seed-determined order."""
    rng = random.Random(seed)
    pairs: set[tuple[int, int]] = set()
    ordered: list[tuple[int, int]] = []
    while len(ordered) < count:
        pair = (rng.randint(100, 999), rng.randint(100, 999))
        if pair not in pairs:
            pairs.add(pair)
            ordered.append(pair)
    return ordered


def write_jsonl(path: Path, pairs: list[tuple[int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(make_example(a, b)) + "\n" for a, b in pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/arithmetic"))
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = sample_pairs(args.train + args.test, args.seed)
    write_jsonl(args.out / "train.jsonl", pairs[: args.train])
    write_jsonl(args.out / "test.jsonl", pairs[args.train :])
    print(f"wrote {args.train} train and {args.test} test examples to {args.out}")


if __name__ == "__main__":
    main()
