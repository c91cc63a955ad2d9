"""Training-step throughput and peak memory: DiaBlo vs PEFT LoRA vs the no-adapter floor.

Every variant (``benchmarks/train_variants.py``) takes the service's training step on the same batch: B rows
of T random tokens whose last R tokens are the response (loss on those only), clipping, AdamW.

- ``floor``: the frozen model with the input-embedding output requiring grad (``enable_input_require_grads``),
  so forward and the whole activation backward run, but no parameter gets a gradient and nothing is updated.
- ``diablo``: DiaBlo N=64 on the default targets, einsum forward; ``diablo-fused``: the folded-weight forward.
- ``lora-matched``: PEFT LoRA on the same targets at the rank nearest DiaBlo's parameter count; ``lora-r32``.
- Optional: ``diablo-dropout``, the service default (adapter dropout 0.05 on the fused path, which corrects
  only the dropped entries), ``diablo-dropout-einsum`` (the same dropout on the einsum path), and
  ``lora-dropout``, matched LoRA with the same dropout.

Timing is robust to background load: ONE process holds every variant (the base loaded once, deep-copied per
variant) and runs their steps interleaved, one step per variant per round (the order rotates each round),
after warm-up rounds. Each step records wall time and process CPU time (CUDA: events after synchronize).
Ratios are taken per round, then their median.
With ``--precision both`` the fp32 and bf16 variants (``name@fp32``, ``name@bf16``) share the rounds, so the
bf16/fp32 ratio of each variant is taken within rounds too. Memory is measured separately, one fresh
subprocess per variant (peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on CUDA), because one process
cannot separate the variants' peaks.

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --model default --rounds 6 --threads 1
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --model default --precision both --rounds 4 \
        --threads 1 --variants floor,diablo-dropout,lora-dropout
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.step_timing import interleave, ratio_medians
from benchmarks.train_variants import VARIANTS, load_plain, make_variant, synthetic_batch, train_step
from benchmarks.variant_memory import measure_memory

PRECISIONS = {"fp32": ("fp32",), "bf16": ("bf16",), "both": ("fp32", "bf16")}
VERSUS_LORA = (
    "diablo/lora-matched",
    "diablo-fused/lora-matched",
    "diablo-dropout/lora-dropout",
    "diablo-dropout-einsum/lora-dropout",
)


def labelled(names: list[str], precisions: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``(label, variant, precision)`` per timed model; labels carry ``@precision`` when there are two."""
    return [(f"{n}@{p}" if len(precisions) > 1 else n, n, p) for p in precisions for n in names]


def time_variants(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """Builds every variant in this process and times their interleaved steps; returns medians and ratios."""
    base = load_plain(args.model, args.device, torch.float32)
    specs = labelled(names, PRECISIONS[args.precision])
    variants = [
        make_variant(base, name, copy_base=i < len(specs) - 1, precision=precision, name=label)
        for i, (label, name, precision) in enumerate(specs)
    ]  # 1 load
    del base
    vocab = variants[0].model.config.vocab_size
    batch = synthetic_batch(vocab, args.batch_size, args.seq_len, args.response_len)
    samples = interleave(
        {v.name: (lambda v=v: train_step(v, batch, args.device)) for v in variants},
        args.rounds,
        args.warmup,
        args.device,
    )
    tokens = args.batch_size * args.seq_len
    rows = {}
    for variant in variants:
        wall, cpu = samples[variant.name]["wall"], samples[variant.name]["cpu"]
        rows[variant.name] = {
            "trainable": variant.trainable,
            "wall_s": statistics.median(wall),
            "cpu_s": statistics.median(cpu),
            "tokens_per_s": tokens / statistics.median(wall),
            "wall_samples": wall,
            "cpu_samples": cpu,
        }
    return {"rows": rows, "ratios": ratio_medians(samples, ratio_pairs(names, PRECISIONS[args.precision]))}


def ratio_pairs(names: list[str], precisions: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every variant against the floor and DiaBlo against LoRA, per precision; bf16 against fp32."""
    pairs = []
    for precision in precisions:
        label = {name: label for label, name, p in labelled(names, precisions) if p == precision}
        pairs += [(label[n], label["floor"]) for n in names if n != "floor"]
        versus = [pair.split("/") for pair in VERSUS_LORA]
        pairs += [(label[a], label[b]) for a, b in versus if a in label and b in label]
    if len(precisions) > 1:
        pairs += [(f"{n}@bf16", f"{n}@fp32") for n in names]
    return pairs


def memory_isolated(args: argparse.Namespace, variant: str) -> dict[str, float]:
    """Runs ``measure_memory`` for one variant in a fresh interpreter and returns its numbers."""
    command = [sys.executable, __file__, "--memory-worker", variant, *sys.argv[1:]]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def table(timing: dict[str, Any], memory: dict[str, dict[str, float]], device: str) -> str:
    """The markdown table of medians, per-round ratio medians and peak memory."""
    unit = "CUDA max allocated" if device.startswith("cuda") else "peak RSS"
    lines = [
        "| variant | trainable params | step wall (s) | step CPU (s) | tokens/s | wall / floor "
        f"| CPU / floor | {unit} (MiB) | of which training (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in timing["rows"].items():
        floor = "floor" + name.partition("@")[1] + name.partition("@")[2]
        ratio = timing["ratios"].get(f"{name}/{floor}", {"wall": 1.0, "cpu": 1.0} if name == floor else None)
        mem = memory.get(name)
        lines.append(
            f"| {name} | {row['trainable']:,} | {row['wall_s']:.3f} | {row['cpu_s']:.3f} | "
            f"{row['tokens_per_s']:,.0f} | {_fmt(ratio, 'wall')} | {_fmt(ratio, 'cpu')} | "
            f"{_mib(mem, 'peak_mb')} | {_mib(mem, 'training_mb')} |"
        )
    lines.append("")
    for pair, ratio in timing["ratios"].items():
        if not pair.split("/")[1].startswith("floor"):
            lines.append(f"{pair} step time: wall {ratio['wall']:.3f}, CPU {ratio['cpu']:.3f}")
    return "\n".join(lines)


def _fmt(ratio: dict[str, float] | None, key: str) -> str:
    return f"{ratio[key]:.3f}" if ratio else "-"


def _mib(memory: dict[str, float] | None, key: str) -> str:
    return f"{memory[key]:,.0f}" if memory else "-"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="default", help="default, tiny or llama-1b")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (one step per variant each)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--memory-steps", type=int, default=2, help="steps per memory subprocess (0: skip)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=32, help="learned tokens at the end of each row")
    parser.add_argument(
        "--precision", choices=sorted(PRECISIONS), default="fp32", help="frozen weights in fp32, bf16 or both"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help='comma-separated subset ("" for none)')
    parser.add_argument("--threads", type=int, help="torch.set_num_threads in every process")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--accuracy", action="store_true", help="also the arithmetic accuracy comparison")
    parser.add_argument("--accuracy-steps", type=int, default=150)
    parser.add_argument("--accuracy-lr", type=float, default=2e-3)
    parser.add_argument("--accuracy-limit", type=int, help="score only the first N test questions")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.response_len < args.seq_len:
        parser.error(f"--response-len must be in [1, --seq-len), got {args.response_len}")
    return args


def run_throughput(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """Interleaved timing, then one memory subprocess per variant; prints and returns both."""
    if "floor" not in names:
        raise SystemExit("--variants must include floor: every ratio is taken against it")
    timing = time_variants(args, names)
    specs = labelled(names, PRECISIONS[args.precision])
    memory = {label: memory_isolated(args, label) for label, _, _ in specs} if args.memory_steps else {}
    print(table(timing, memory, args.device))
    return {"timing": timing, "memory": memory}


def main() -> None:
    args = parse_args(sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        name, _, precision = args.memory_worker.partition("@")
        print(json.dumps(measure_memory(args, name, precision or args.precision)))
        return
    names = [name for name in args.variants.split(",") if name]
    report: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "json"}}
    if names:
        report["throughput"] = run_throughput(args, names)
    if args.accuracy:
        from benchmarks.train_accuracy import compare_accuracy

        report["accuracy"] = compare_accuracy(
            args.accuracy_steps, args.accuracy_lr, args.batch_size, limit=args.accuracy_limit
        )
        print(json.dumps(report["accuracy"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
