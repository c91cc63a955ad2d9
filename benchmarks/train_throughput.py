"""Training-step throughput and peak memory: DiaBlo vs PEFT LoRA vs the no-adapter floor, one run each.

Every variant trains the same model on the same random token batch (B x T, loss on every token) with AdamW:

- ``floor``: the frozen model with the input-embedding output requiring grad (``enable_input_require_grads``),
  so forward and the whole activation backward run, but no parameter gets a gradient and nothing is updated.
  No adapter can train faster than this.
- ``diablo``: DiaBlo N=64 on the default targets (einsum forward); ``diablo-fused``: the same with the
  folded-weight forward (``DiaBloLinear.fused``; dropout 0 so the fused path is taken).
- ``lora-matched``: PEFT LoRA on the same targets at the rank whose parameter count is nearest DiaBlo's;
  ``lora-r32``: rank 32.

On CPU each variant runs in a fresh subprocess so that its peak RSS is its own. ``--accuracy`` also trains
DiaBlo and matched LoRA for the same steps and schedule on the arithmetic example and reports exact match.

    python benchmarks/train_throughput.py --model default --steps 8 --batch-size 16 --seq-len 64
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_variants import VARIANTS, build_variant

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def random_batch(vocab: int, batch: int, seq_len: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (batch, seq_len), generator=generator).to(device)  # (B, T)


def train_step(model: Any, ids: torch.Tensor, optimizer: torch.optim.Optimizer | None, device: str) -> None:
    """Forward, mean next-token loss over all positions, backward, and an AdamW step if anything trains."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    with autocast:
        logits = model(input_ids=ids, use_cache=False).logits  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def measure(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Builds one variant, runs warm-up then timed steps, and returns its numbers."""
    model, trainable = build_variant(args.model, variant, args.device, DTYPES[args.dtype])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (
        torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0) if params else None
    )
    ids = random_batch(model.config.vocab_size, args.batch_size, args.seq_len, args.device)
    rss_loaded = rss_mb()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        train_step(model, ids, optimizer, args.device)
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        train_step(model, ids, optimizer, args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    step = statistics.median(times)
    result = {"variant": variant, "trainable": trainable, "step_s": step, "tokens_per_s": ids.numel() / step}
    if args.device.startswith("cuda"):
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result.update(peak_mem_mb=peak_rss_mb(), rss_after_load_mb=rss_loaded)
    return result


def run_isolated(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Runs ``measure`` for one variant in a fresh interpreter and returns its JSON line."""
    command = [sys.executable, __file__, "--worker", variant, *sys.argv[1:]]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def table(rows: list[dict[str, Any]]) -> str:
    by_name = {row["variant"]: row for row in rows}
    lines = [
        "| variant | trainable params | step (s) | tokens/s | peak mem (MiB) | step / floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    floor = by_name.get("floor", {}).get("step_s")
    for row in rows:
        ratio = f"{row['step_s'] / floor:.3f}" if floor else "-"
        lines.append(
            f"| {row['variant']} | {row['trainable']:,} | {row['step_s']:.3f} | {row['tokens_per_s']:,.0f} | "
            f"{row['peak_mem_mb']:,.0f} | {ratio} |"
        )
    if "diablo" in by_name and "lora-matched" in by_name:
        ratio = by_name["diablo"]["step_s"] / by_name["lora-matched"]["step_s"]
        lines.append(f"\nDiaBlo / LoRA-matched step time: {ratio:.3f}")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--model", default="default", help='"default" (SmolLM2-135M) or "tiny" (random 2-layer)'
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--variants", default=",".join(VARIANTS), help='comma-separated subset ("" for none)')
    parser.add_argument("--threads", type=int, help="torch.set_num_threads in every run")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--accuracy", action="store_true", help="also the arithmetic accuracy comparison")
    parser.add_argument("--accuracy-steps", type=int, default=150)
    parser.add_argument("--accuracy-lr", type=float, default=2e-3)
    parser.add_argument("--accuracy-limit", type=int, help="score only the first N test questions")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args(sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args, args.worker)))
        return
    rows = [run_isolated(args, variant) for variant in args.variants.split(",") if variant]
    report: dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "throughput": rows,
    }
    if rows:
        print(table(rows))
    if args.accuracy:
        from benchmarks.train_accuracy import compare_accuracy

        report["accuracy"] = compare_accuracy(
            args.accuracy_steps, args.accuracy_lr, args.batch_size, limit=args.accuracy_limit
        )
        print(json.dumps(report["accuracy"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
