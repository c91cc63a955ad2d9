"""Step time, tokens/s and peak device memory of one training run against its number of ranks.

    python benchmarks/distributed_scaling.py --ranks 1,2 --strategy ddp            # CPU, gloo
    python benchmarks/distributed_scaling.py --ranks 1,8 --strategy ddp --device cuda --dtype bfloat16
    python benchmarks/distributed_scaling.py --ranks 8 --strategy fsdp --device cuda --shape 7b \
        --dtype bfloat16

Each N is a ``torchrun --standalone --nproc-per-node N`` launch of this file with ``--rank-run``; every launch
trains the same global batch (``--batch-size``) of random tokens on a random Llama of ``--shape``. Peak memory
is per device and counted after the first step (so the full model placed before sharding does not count).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "small": (512, 1536, 4, 8, 4, 4096),
    "7b": (4096, 11008, 32, 32, 32, 32000),
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ranks", default="1,2", help="comma-separated world sizes")
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rank-run", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def rank_run(args: argparse.Namespace) -> None:
    """One rank: train ``--steps`` steps and (rank 0) write the timing to ``args.rank_run``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from diablo_core.data.tokenization import TokenizedExample
    from diablo_core.methods.diablo.config import DiaBloConfig
    from diablo_core.methods.diablo.model import apply_diablo
    from diablo_core.training.distributed import rank_device
    from diablo_core.training.loop import TrainingConfig, train

    hidden, inter, layers, heads, kv, vocab = SHAPES[args.shape]
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(getattr(torch, args.dtype))
    apply_diablo(model, DiaBloConfig(num_blocks=64, dropout=0.0))
    half = args.seq_len // 2
    generator = torch.Generator().manual_seed(1)
    examples = [
        TokenizedExample(ids, [-100] * half + ids[half:])
        for ids in torch.randint(
            0, vocab, (args.batch_size * args.steps, args.seq_len), generator=generator
        ).tolist()
    ]
    device = rank_device(args.device)
    peak = {"bytes": 0}

    class Memory:
        def on_progress(self, progress) -> None:
            if device.startswith("cuda"):
                if progress.step == 1:
                    torch.cuda.reset_peak_memory_stats(device)
                peak["bytes"] = max(peak["bytes"], torch.cuda.max_memory_allocated(device))

    training = TrainingConfig(learning_rate=1e-4, max_steps=args.steps, batch_size=args.batch_size,
                              warmup_steps=0, device=args.device, strategy=args.strategy)  # fmt: skip

    class Pad:
        pad_token_id, eos_token_id = 0, 0

    with tempfile.TemporaryDirectory() as output:
        result = train(model, Pad(), examples, training, output_dir=Path(output), callbacks=[Memory()])
    if int(os.environ.get("RANK", "0")) == 0:
        steps = max(1, result.steps)
        report = {
            "step_s": result.train_seconds / steps,
            "tokens_per_s": result.trained_tokens / max(result.train_seconds, 1e-9),
            "peak_gib_per_device": peak["bytes"] / 2**30,
        }
        args.rank_run.write_text(json.dumps(report))


def main() -> None:
    args = parse()
    if args.rank_run:
        rank_run(args)
        return
    print(f"{args.shape} model on {args.device}, global batch {args.batch_size} x {args.seq_len} tokens")
    print("| ranks | strategy | step (s) | tokens/s | speed-up | peak GiB/device |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    for ranks in [int(n) for n in args.ranks.split(",")]:
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={ranks}",
            ]
            command += [__file__, *sys.argv[1:], "--rank-run", report.name]
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            result = json.loads(Path(report.name).read_text())
        base = base or result["tokens_per_s"]
        speed = result["tokens_per_s"] / base
        print(f"| {ranks} | {args.strategy} | {result['step_s']:.3f} | {result['tokens_per_s']:.0f} | "
              f"{speed:.2f}x | {result['peak_gib_per_device']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
