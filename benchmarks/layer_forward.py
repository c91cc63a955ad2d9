"""Times DiaBloLinear forward+backward: the einsum path against the fused (folded-weight) path.

Usage: python benchmarks/layer_forward.py [--tokens 640] [--blocks 64] [--repeats 30] [--device cpu]
       [--dtype float32|bfloat16] [--threads T] [--dropout P]

With ``--dropout`` the einsum path draws a mask and the fused path corrects the dropped entries only.

The default shapes are SmolLM2-135M's adapted layers (q 576->576, k/v 576->192, up 576->1536,
down 1536->576); ``--tokens`` is tokens per step (batch x length). Reported times are the fastest of
``--repeats`` alternating steps (min, not mean, because other processes share the CPU).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from diablo_core.layer import DiaBloLinear

SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(layer: DiaBloLinear, x: torch.Tensor, grad: torch.Tensor, fused: bool) -> float:
    """Seconds of one forward + backward (input and block gradients, as inside a decoder)."""
    layer.fused = fused
    sync(x.device)
    start = time.perf_counter()
    layer(x).backward(grad)
    sync(x.device)
    layer.blocks.grad = x.grad = None
    return time.perf_counter() - start


def time_paths(layer: DiaBloLinear, x: torch.Tensor, repeats: int) -> dict[bool, float]:
    """Fastest step of each path; the paths alternate so that load from other processes hits both alike."""
    grad = torch.randn(*x.shape[:-1], layer.out_features, device=x.device, dtype=x.dtype)
    samples: dict[bool, list[float]] = {False: [], True: []}
    for step in range(repeats + 3):
        for fused in (False, True):
            seconds = step_seconds(layer, x, grad, fused)
            if step >= 3:  # warm-up steps are not counted
                samples[fused].append(seconds)
    return {fused: min(values) for fused, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=640)
    parser.add_argument("--blocks", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dropout", type=float, default=0.0, help="adapter dropout of both paths")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"device={device} dtype={args.dtype} tokens={args.tokens} N={args.blocks} dropout={args.dropout} "
        f"threads={torch.get_num_threads()}"
    )
    totals = {False: 0.0, True: 0.0}
    for in_f, out_f in SHAPES:
        layer = (
            DiaBloLinear(nn.Linear(in_f, out_f, bias=False), args.blocks, dropout=args.dropout)
            .to(device=device, dtype=dtype)
            .train()
        )
        nn.init.normal_(layer.blocks, std=0.02)
        x = torch.randn(args.tokens, in_f, device=device, dtype=dtype, requires_grad=True)
        timings = time_paths(layer, x, args.repeats)
        for fused in (False, True):
            totals[fused] += timings[fused]
        print(
            f"{in_f:>5} -> {out_f:<5} einsum {timings[False] * 1e3:7.3f} ms   "
            f"fused {timings[True] * 1e3:7.3f} ms   fused/einsum {timings[True] / timings[False]:.2f}"
        )
    print(
        f"sum of one layer of each shape: einsum {totals[False] * 1e3:.3f} ms, "
        f"fused {totals[True] * 1e3:.3f} ms, fused/einsum {totals[True] / totals[False]:.2f}"
    )


if __name__ == "__main__":
    main()
