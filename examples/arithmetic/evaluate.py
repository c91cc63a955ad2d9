"""Exact-match accuracy of greedy answers on the arithmetic test set, for a base model plus optional adapter.

python examples/arithmetic/evaluate.py --test data/arithmetic/test.jsonl [--adapter DIR] [--model default]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from diablo_core.generation.decoding import build_prompt_ids
from diablo_core.methods.diablo.adapter_io import load_adapter
from diablo_core.models.loading import load_base_model


def read_questions(path: Path) -> list[tuple[list[dict[str, str]], str]]:
    """(prompt messages, expected answer) of every chat example: the messages before the last one."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["messages"][:-1], row["messages"][-1]["content"]) for row in rows]


@torch.no_grad()
def greedy_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    max_new_tokens: int = 8,
    batch_size: int = 50,
) -> list[str]:
    """Greedy completions of chat prompts, batched with left padding."""
    model.eval()
    pad = tokenizer.pad_token_id
    answers = []
    for start in range(0, len(prompts), batch_size):
        ids = [build_prompt_ids(tokenizer, messages=m) for m in prompts[start : start + batch_size]]
        width = max(len(row) for row in ids)
        input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in ids])  # (B, T)
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in ids])  # (B, T)
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )  # (B, T + new)
        answers += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [answer.strip() for answer in answers]


def exact_match(model: Any, tokenizer: Any, test_file: Path, limit: int | None = None) -> float:
    """Fraction of test questions whose greedy answer equals the expected one exactly."""
    questions = read_questions(test_file)[:limit]
    answers = greedy_answers(model, tokenizer, [messages for messages, _ in questions])
    hits = sum(answer == expected for answer, (_, expected) in zip(answers, questions, strict=True))
    return hits / len(questions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=Path, default=Path("data/arithmetic/test.jsonl"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--adapter", type=Path)
    parser.add_argument("--limit", type=int, help="evaluate only the first LIMIT questions")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    loaded = load_base_model(args.model, data_dir=args.data_dir)
    if args.adapter is not None:
        load_adapter(loaded.model, args.adapter)
    started = time.perf_counter()
    accuracy = exact_match(loaded.model, loaded.tokenizer, args.test, args.limit)
    count = len(read_questions(args.test)[: args.limit])
    print(f"exact match: {accuracy:.1%} of {count} ({time.perf_counter() - started:.1f} s)")
    print(json.dumps({"exact_match": accuracy, "examples": count, "adapter": str(args.adapter)}))


if __name__ == "__main__":
    main()
