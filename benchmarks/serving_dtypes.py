"""Decode throughput of the inference engine with its weights in fp32 and in bf16 (``--dtype both``).

Each dtype gets its own copy of the base model (parameters cast, buffers kept, as ``load_base_model`` does)
and its own engine; adapters are applied in the engine's dtype. For base rows and for rows of different
adapters mixed in one batch it reports the engine's decode tokens/s (best of ``--rounds``) and the tokens/s
of single decode steps (median CPU time on the CPU), then bf16 over fp32.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

from benchmarks.serving import _keep_best, requests_for, run_batch, step_rates
from diablo_core.models.identity import BaseModelIdentity
from diablo_core.models.loading import cast_parameters
from diablo_core.precision.hardware import torch_dtype
from diablo_core.serving import AdapterRef, InferenceEngine

DTYPES = ("fp32", "bf16")
MODES = ("base", "mixed adapters")


def compare_dtypes(
    model: Any, tokenizer: Any, identity: BaseModelIdentity, refs: list[AdapterRef], args: argparse.Namespace
) -> dict[str, dict[str, dict[str, float]]]:
    """``{dtype: {mode: {"engine_decode_tok_s", "step_tok_s"}}}`` for fp32 and bf16."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for dtype in DTYPES:
        copied = cast_parameters(copy.deepcopy(model), torch_dtype(dtype))
        with InferenceEngine(copied, tokenizer, identity=identity, max_batch_size=len(refs)) as engine:
            run_batch(engine, requests_for([None] * 2, 4))  # warm-up
            batches = {
                "base": requests_for([None] * len(refs), args.max_tokens),
                "mixed adapters": requests_for(refs, args.max_tokens),
            }
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.rounds):
                for mode, requests in batches.items():
                    _keep_best(best, mode, run_batch(engine, requests))
            steps = step_rates(engine, refs, args.context, args.steps)
        results[dtype] = {
            mode: {"engine_decode_tok_s": best[mode]["decode_tok_s"], "step_tok_s": steps[mode]}
            for mode in MODES
        }
        del copied
    return results


def dtype_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: per mode, fp32 and bf16 decode rates and their ratio."""
    lines = [
        "| mode | fp32 engine decode tok/s | bf16 engine decode tok/s | bf16/fp32 | fp32 step tok/s "
        "| bf16 step tok/s | bf16/fp32 |",
        "|" + " --- |" * 7,
    ]
    for mode in MODES:
        fp32, bf16 = results["fp32"][mode], results["bf16"][mode]
        engine_ratio = bf16["engine_decode_tok_s"] / fp32["engine_decode_tok_s"]
        step_ratio = bf16["step_tok_s"] / fp32["step_tok_s"]
        lines.append(
            f"| {mode} | {fp32['engine_decode_tok_s']:.1f} | {bf16['engine_decode_tok_s']:.1f} | "
            f"{engine_ratio:.2f} | {fp32['step_tok_s']:.1f} | {bf16['step_tok_s']:.1f} | {step_ratio:.2f} |"
        )
    return "\n".join(lines)
