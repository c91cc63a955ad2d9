"""Quantized bases: weight bytes, peak memory and step time of DiaBlo on fp32/bf16/int8/NF4 bases and QLoRA.

Variants (each built and measured alone in a fresh subprocess, so that peak RSS belongs to it):

- ``fp32``, ``bf16``: DiaBlo N=64 on the default targets over the full-precision base;
- ``int8``, ``nf4``: the same over the base loaded with ``load_base_model(quantization=...)``;
- ``nf4-qlora``: PEFT LoRA on the same NF4 base at the rank nearest DiaBlo's parameter count (QLoRA).

Each variant takes the service's training step (``benchmarks/train_variants.train_step``: response-only
loss, clipping, AdamW) on the same synthetic batch. ``weights_mb`` is the model's stored bytes (packed codes
and their statistics included), ``setup_mb`` the RSS before the first step, ``peak_mb`` the RSS high-water
mark over the steps (reset after loading, see ``benchmarks/variant_memory``), ``step_s`` the median wall time
of the steps after the first.

    OMP_NUM_THREADS=1 python benchmarks/quantized.py --model default --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_variants import (
    Variant,
    diablo_count,
    matched_rank,
    synthetic_batch,
    train_step,
    with_lora,
)
from benchmarks.variant_memory import _peak, _reset_peak
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, diablo_modules
from diablo_core.models.loading import load_base_model
from diablo_core.models.quantization import stored_bytes

VARIANTS = {  # name -> (dtype, quantization, method)
    "fp32": (torch.float32, None, "diablo"),
    "bf16": (torch.bfloat16, None, "diablo"),
    "int8": (torch.float32, "int8", "diablo"),
    "nf4": (torch.float32, "nf4", "diablo"),
    "nf4-qlora": (torch.float32, "nf4", "lora"),
}


def build(args: argparse.Namespace, name: str) -> tuple[Variant, int]:
    """Loads the base of ``name``, adapts it, returns the variant and the base's stored bytes."""
    dtype, quantization, method = VARIANTS[name]
    model = load_base_model(args.model, device=args.device, dtype=dtype, quantization=quantization).model
    weights = stored_bytes(model)
    torch.manual_seed(0)
    if method == "diablo":
        apply_diablo(model, DiaBloConfig(num_blocks=64, dropout=0.0))
        for layer in diablo_modules(model).values():
            layer.blocks.data.normal_(std=1e-3)  # non-zero, as after some training
    else:
        rank = matched_rank(model, diablo_count(model))  # packed linears keep their in/out features
        model = with_lora(model, rank).get_base_model()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    return Variant(name, model, params, optimizer), weights


def measure(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Builds ``name`` in this process and measures memory and step time."""
    variant, weights = build(args, name)
    batch = synthetic_batch(variant.model.config.vocab_size, args.batch_size, args.seq_len, args.response_len)
    setup = _reset_peak(variant.model, args.device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        train_step(variant, batch, args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = _peak(args.device)
    return {
        "variant": name,
        "trainable": variant.trainable,
        "weights_mb": round(weights / 2**20, 1),
        "setup_mb": round(setup, 1),
        "peak_mb": round(peak, 1),
        "step_s": round(statistics.median(times[1:] or times), 3),
    }


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every variant in a fresh subprocess of this script, one after another."""
    rows = []
    for name in args.variants:
        command = [sys.executable, __file__, "--one", name, *_shared_flags(args)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _shared_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--model", args.model, "--device", args.device, "--threads", str(args.threads)]
    flags += ["--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    return [*flags, "--response-len", str(args.response_len), "--steps", str(args.steps)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--response-len", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--one", choices=list(VARIANTS), help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args, args.one)))
        return
    rows = run_all(args)
    fp32 = next((row for row in rows if row["variant"] == "fp32"), None)
    for row in rows:
        if fp32 is not None:
            row["weights_vs_fp32"] = round(row["weights_mb"] / fp32["weights_mb"], 3)
    print(json.dumps({"config": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
