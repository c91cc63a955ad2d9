"""Greedy answers of a fine-tuned adapter served in fp32 and in bf16: exact match of each, and agreement.

The service's path: ``load_base_model`` in the dtype that ``DIABLO_INFERENCE_DTYPE`` names (parameters cast,
the rotary buffer kept fp32), an ``InferenceEngine`` on it, the adapter applied in the engine's dtype, one
chat request per held-out question (temperature 0). Each dtype gets its own model and engine, one after the
other. Example (the adapter of the README's arithmetic run)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dtype_agreement.py --adapter data/adapters/<id> \
        --test data/arithmetic/test.jsonl --threads 1 --json benchmarks/out/dtype_agreement.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_accuracy import _evaluate_module
from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from diablo_core.models.loading import load_base_model
from diablo_core.precision.hardware import apply_torch_threads, torch_dtype
from diablo_core.serving import AdapterRef, GenerationRequest, InferenceEngine

DTYPES = ("fp32", "bf16")


def adapter_ref(directory: Path) -> AdapterRef:
    """The ref the service would build for an adapter directory (its weights file's sha256)."""
    digest = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()
    return AdapterRef(digest, directory)


def read_questions(test_file: Path, limit: int | None) -> list[tuple[list[dict[str, str]], str]]:
    """(prompt messages, expected answer) of the first ``limit`` questions (all when None)."""
    return _evaluate_module().read_questions(test_file)[:limit]


def engine_answers(
    engine: InferenceEngine,
    ref: AdapterRef | None,
    prompts: list[list[dict[str, str]]],
    max_tokens: int,
) -> tuple[list[str], int, float]:
    """Greedy answers (stripped), completion tokens and wall seconds, every request submitted at once."""
    started = time.perf_counter()
    handles = [
        engine.submit(
            GenerationRequest(adapter=ref, messages=messages, max_tokens=max_tokens, temperature=0.0)
        )
        for messages in prompts
    ]
    results = [handle.result() for handle in handles]
    seconds = time.perf_counter() - started
    return [r.text.strip() for r in results], sum(r.completion_tokens for r in results), seconds


def served_answers(
    dtype: str, ref: AdapterRef, prompts: list[list[dict[str, str]]], args: argparse.Namespace
) -> dict[str, Any]:
    """Loads the base model in ``dtype``, serves ``prompts`` with the adapter; answers, tokens, seconds."""
    loaded = load_base_model(args.model, data_dir=args.data_dir, device="cpu", dtype=torch_dtype(dtype))
    with InferenceEngine(
        loaded.model,
        loaded.tokenizer,
        identity=loaded.identity,
        max_batch_size=args.batch,
        torch_threads=args.threads,
    ) as engine:
        answers, tokens, seconds = engine_answers(engine, ref, prompts, args.max_tokens)
    return {"answers": answers, "completion_tokens": tokens, "seconds": seconds}


def agreement_table(results: dict[str, dict[str, Any]], expected: list[str]) -> tuple[str, dict[str, Any]]:
    """Markdown rows (exact match per dtype, identical answers) and the same numbers as a dict."""
    count = len(expected)
    hits = {
        dtype: sum(a == e for a, e in zip(results[dtype]["answers"], expected, strict=True))
        for dtype in DTYPES
    }
    same = sum(a == b for a, b in zip(results["fp32"]["answers"], results["bf16"]["answers"], strict=True))
    rate = {dtype: results[dtype]["completion_tokens"] / results[dtype]["seconds"] for dtype in DTYPES}
    lines = [
        "| engine dtype | exact match | completion tok/s (wall) |",
        "| --- | ---: | ---: |",
        *(f"| {d} | {hits[d]}/{count} ({hits[d] / count:.1%}) | {rate[d]:.1f} |" for d in DTYPES),
        "",
        f"Identical answers fp32 vs bf16: {same}/{count} ({same / count:.1%}); exact-match difference "
        f"{abs(hits['fp32'] - hits['bf16']) / count * 100:.1f} points.",
    ]
    numbers = {"questions": count, "exact_match": hits, "identical": same, "tok_s": rate}
    return "\n".join(lines), numbers


def add_answer_options(parser: argparse.ArgumentParser, limit: int | None, threads_help: str) -> None:
    """The options ``served_answers`` and ``read_questions`` read, shared by the scripts that use them."""
    parser.add_argument("--adapter", type=Path, required=True, help="adapter directory (config + weights)")
    parser.add_argument("--test", type=Path, default=Path("data/arithmetic/test.jsonl"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--limit", type=int, default=limit, help="only the first LIMIT questions")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="engine rows (the service's default is 8)")
    parser.add_argument("--threads", type=int, default=0, help=threads_help)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_answer_options(parser, limit=None, threads_help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write answers and numbers to this JSON file")
    args = parser.parse_args()
    apply_torch_threads(args.threads)
    questions = read_questions(args.test, args.limit)
    prompts, expected = [m for m, _ in questions], [e for _, e in questions]
    ref = adapter_ref(args.adapter)
    results = {dtype: served_answers(dtype, ref, prompts, args) for dtype in DTYPES}
    table, numbers = agreement_table(results, expected)
    print(table)
    for index, (a, b) in enumerate(zip(results["fp32"]["answers"], results["bf16"]["answers"], strict=True)):
        if a != b:
            print(f"  question {index}: expected {expected[index]!r}, fp32 {a!r}, bf16 {b!r}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**numbers, "expected": expected, "results": results}, indent=1))


if __name__ == "__main__":
    main()
