"""A fine-tuned model exported to GGUF and run by llama.cpp (llama-cpp-python) answers as the service does.

For one adapter: the library builds the GGUF exports (``diablo_core.export``, f16 and q8_0, cached under
``<data-dir>/exports/<adapter sha256>/`` as the service caches them); ``llama_cpp.Llama`` loads each file and
answers the first ``--limit`` held-out questions greedily through ``create_chat_completion`` (the chat
template stored in the GGUF); the library's inference engine answers the same questions greedily with the
adapter, in fp32 and in bf16 (the service's ``DIABLO_INFERENCE_DTYPE``). Reported: exact match of each,
answers identical to the engine's, and completion tokens/s. It also checks that the GGUF's tokenizer turns
each rendered prompt into the engine's token ids. Needs the ``llama`` extra (``pip install -e '.[llama]'``,
which compiles llama.cpp)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gguf_llama_cpp.py --adapter data/adapters/<id> \
        --test data/arithmetic/test.jsonl --limit 50 --threads 1 --json benchmarks/out/gguf_llama_cpp.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dtype_agreement import adapter_ref, add_answer_options, read_questions, served_answers
from diablo_core.data.tokenization import render_messages
from diablo_core.export.build import ExportSource, export_model
from diablo_core.export.formats import QUANTIZATION_NAMES, ExportRequest
from diablo_core.generation.decoding import build_prompt_ids
from diablo_core.models.loading import load_base_model
from diablo_core.precision.hardware import apply_torch_threads


def build_ggufs(args: argparse.Namespace) -> dict[str, Path]:
    """The GGUF file of each quantization, built by the library's exporter (or found in its cache)."""
    ref = adapter_ref(args.adapter)
    source = ExportSource(args.adapter, ref.sha256, args.model, args.data_dir)
    files = {}
    for quantization in args.quantizations:
        started = time.perf_counter()
        files[quantization] = export_model(
            source, ExportRequest("gguf", quantization), args.data_dir / "exports"
        )
        size = files[quantization].stat().st_size / 2**20
        print(
            f"{quantization}: {files[quantization]} ({size:.0f} MiB, {time.perf_counter() - started:.1f} s)"
        )
    return files


def llama_answers(
    path: Path, prompts: list[list[dict[str, str]]], args: argparse.Namespace
) -> dict[str, Any]:
    """Greedy chat answers of llama.cpp for the GGUF at ``path``, one request at a time."""
    from llama_cpp import Llama  # the optional `llama` extra

    llm = Llama(str(path), n_ctx=512, n_threads=args.threads or None, seed=0, verbose=False)
    answers, tokens, started = [], 0, time.perf_counter()
    for messages in prompts:
        reply = llm.create_chat_completion(messages=messages, max_tokens=args.max_tokens, temperature=0.0)
        answers.append((reply["choices"][0]["message"]["content"] or "").strip())
        tokens += reply["usage"]["completion_tokens"]
    seconds = time.perf_counter() - started
    return {"answers": answers, "completion_tokens": tokens, "seconds": seconds, "llm": llm}


def same_prompt_ids(llm: Any, tokenizer: Any, prompts: list[list[dict[str, str]]]) -> int:
    """How many rendered prompts the GGUF's tokenizer splits into exactly the engine's token ids."""
    same = 0
    for messages in prompts:
        text = render_messages(messages, tokenizer, add_generation_prompt=True)
        same += llm.tokenize(text.encode(), add_bos=False, special=True) == build_prompt_ids(
            tokenizer, messages
        )
    return same


def report(results: dict[str, dict[str, Any]], expected: list[str], references: tuple[str, ...]) -> str:
    """Markdown: per answerer, exact match, identical answers to each engine dtype, tokens/s."""
    count = len(expected)
    header = " | ".join(f"same as engine {ref}" for ref in references)
    lines = [
        f"| answerer | exact match | {header} | completion tok/s |",
        "|" + " --- |" * (3 + len(references)),
    ]
    for name, result in results.items():
        hits = sum(a == e for a, e in zip(result["answers"], expected, strict=True))
        same = [
            sum(a == b for a, b in zip(result["answers"], results[f"engine {ref}"]["answers"], strict=True))
            for ref in references
        ]
        rate = result["completion_tokens"] / result["seconds"]
        cells = " | ".join(f"{s}/{count}" for s in same)
        lines.append(f"| {name} | {hits}/{count} | {cells} | {rate:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_answer_options(parser, limit=50, threads_help="torch and llama.cpp threads (0: their choice)")
    parser.add_argument(
        "--quantizations", nargs="+", choices=QUANTIZATION_NAMES, default=list(QUANTIZATION_NAMES)
    )
    parser.add_argument("--engine-dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--json", type=Path, help="also write the answers and numbers to this JSON file")
    args = parser.parse_args()
    apply_torch_threads(args.threads)
    questions = read_questions(args.test, args.limit)
    prompts, expected = [m for m, _ in questions], [e for _, e in questions]
    files = build_ggufs(args)
    ref = adapter_ref(args.adapter)
    results = {f"engine {dtype}": served_answers(dtype, ref, prompts, args) for dtype in args.engine_dtypes}
    tokenizer = load_base_model(args.model, data_dir=args.data_dir).tokenizer
    for quantization, path in files.items():
        result = llama_answers(path, prompts, args)
        llm = result.pop("llm")
        same = same_prompt_ids(llm, tokenizer, prompts)
        print(
            f"llama.cpp {quantization}: the GGUF tokenizer gives the engine's ids for {same}/{len(prompts)}"
        )
        results[f"llama.cpp {quantization}"] = {**result, "same_prompt_ids": same}
        del llm
    print(report(results, expected, tuple(args.engine_dtypes)))
    for index, answer in enumerate(expected):
        row = {name: result["answers"][index] for name, result in results.items()}
        if len(set(row.values())) > 1:
            print(f"  question {index}: expected {answer!r}, {row}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        files_out = {q: str(p) for q, p in files.items()}
        args.json.write_text(
            json.dumps({"expected": expected, "files": files_out, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
