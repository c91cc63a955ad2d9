"""Times DiaBloLinear forward+backward: the einsum path, the fused (folded-weight) path and the floor.

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

from diablo_core.methods.diablo.layer import DiaBloLinear

SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


PATHS = ("floor", "einsum", "fused")


def step_seconds(layer: DiaBloLinear, x: torch.Tensor, grad: torch.Tensor, path: str) -> float:
    """Seconds of one forward + backward (input and block gradients, as inside a decoder).

    ``floor`` is the frozen linear alone (forward and input gradient): what no adapter can undercut.
    """
    layer.fused = path == "fused"
    sync(x.device)
    start = time.perf_counter()
    output = layer.base(x) if path == "floor" else layer(x)
    output.backward(grad)
    sync(x.device)
    layer.blocks.grad = x.grad = None
    return time.perf_counter() - start


def time_paths(layer: DiaBloLinear, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Fastest step of each path; the paths alternate so that load from other processes hits all alike."""
    grad = torch.randn(*x.shape[:-1], layer.out_features, device=x.device, dtype=x.dtype)
    samples: dict[str, list[float]] = {path: [] for path in PATHS}
    for step in range(repeats + 3):
        for path in PATHS:
            seconds = step_seconds(layer, x, grad, path)
            if step >= 3:  # warm-up steps are not counted
                samples[path].append(seconds)
    return {path: min(values) for path, values in samples.items()}


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
    totals = dict.fromkeys(PATHS, 0.0)
    for in_f, out_f in SHAPES:
        layer = (
            DiaBloLinear(nn.Linear(in_f, out_f, bias=False), args.blocks, dropout=args.dropout)
            .to(device=device, dtype=dtype)
            .train()
        )
        nn.init.normal_(layer.blocks, std=0.02)
        x = torch.randn(args.tokens, in_f, device=device, dtype=dtype, requires_grad=True)
        timings = time_paths(layer, x, args.repeats)
        for path in PATHS:
            totals[path] += timings[path]
        print(
            f"{in_f:>5} -> {out_f:<5} floor {timings['floor'] * 1e3:7.3f} ms   "
            f"einsum {timings['einsum'] * 1e3:7.3f} ms   fused {timings['fused'] * 1e3:7.3f} ms   "
            f"fused/einsum {timings['fused'] / timings['einsum']:.2f}"
        )
    print(
        f"sum of one layer of each shape: floor {totals['floor'] * 1e3:.3f} ms, "
        f"einsum {totals['einsum'] * 1e3:.3f} ms, fused {totals['fused'] * 1e3:.3f} ms, "
        f"fused/einsum {totals['fused'] / totals['einsum']:.2f}"
    )


if __name__ == "__main__":
    main()
