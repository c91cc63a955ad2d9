"""DiaBlo on a LLaMA-2-7B-shaped NF4 base built layer by layer: build time, peak memory, train and decode.

The model is created on the meta device (no memory), then every decoder linear is materialised with random
fp32 weights and quantized to NF4 at once, one at a time, so the full-precision model never exists: the peak
while building is the packed model plus one fp32 linear. Embeddings, norms and the head are materialised in
the compute dtype (bf16). DiaBlo N=64 (dropout 0.05) is then applied to the NF4 linears of the default
targets and held as the service trains in bf16 (``hold_in_precision``: fp32 blocks, AdamW over them), with
activation checkpointing; ``--steps`` optimizer steps run on one fixed random batch (response-only loss, so
the loss falling from step to step shows the blocks learn). Last, one decode step of the adapted model (one
new token after a prefill of ``--seq-len`` tokens, KV cache on), as it would serve. Random weights make the
numbers about memory and time only.

Peak memory: the process's peak RSS (``resource.getrusage``); on CUDA also ``torch.cuda.max_memory_allocated``
after the build and over the training steps.

    OMP_NUM_THREADS=2 python benchmarks/quantized_7b.py --steps 2 --seq-len 64
    python benchmarks/quantized_7b.py --device cuda --steps 3 --seq-len 512 --batch-size 4   # gpu_check.sh
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.model_shapes import LLAMA2_7B
from benchmarks.train_variants import Variant, synthetic_batch, train_step
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, diablo_modules, trainable_parameters
from diablo_core.models.quantization import model_quantization, quantize_linear, stored_bytes
from diablo_core.training.mixed_precision import hold_in_precision

PRECISION = "bf16"


def peak_rss_mb() -> float:
    """The process's peak resident set so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cuda_peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def build(dtype: torch.dtype, layers: int, device: str) -> nn.Module:
    """The 7B-shaped model with NF4 decoder linears, quantized as each is materialised on ``device``."""
    config = LlamaConfig(**{**LLAMA2_7B, "num_hidden_layers": layers})
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    generator = torch.Generator(device=device).manual_seed(0)
    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                real = nn.Linear(child.in_features, child.out_features, bias=False, device=device)  # fp32
                real.weight.normal_(0.0, 0.02, generator=generator)  # (out, in)
                setattr(parent, name, quantize_linear(real, "nf4", dtype, device))
                del real  # only one full-precision linear ever exists
    for module in model.modules():
        for name, parameter in list(module.named_parameters(recurse=False)):
            if parameter.is_meta:
                value = torch.empty(parameter.shape, dtype=dtype, device=device)
                value.fill_(1.0) if value.dim() == 1 else value.normal_(0.0, 0.02, generator=generator)
                setattr(module, name, nn.Parameter(value, requires_grad=False))
    model.model.rotary_emb = LlamaRotaryEmbedding(config).to(device)  # its buffers were built on meta
    return model.eval()


@torch.no_grad()
def decode_seconds(model: nn.Module, prompt: int, device: str) -> float:
    """Time of one decode forward (one new token) after a prefill of ``prompt`` tokens."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, LLAMA2_7B["vocab_size"], (1, prompt), generator=generator).to(device)  # (1, T)
    cache = model(input_ids=ids, use_cache=True).past_key_values
    next_id = ids[:, -1:]  # (1, 1)
    sync(device)
    start = time.perf_counter()
    model(input_ids=next_id, past_key_values=cache, use_cache=True)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype, device = torch.bfloat16, args.device

    start = time.perf_counter()
    model = build(dtype, args.layers, device)
    sync(device)
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "layers": args.layers,
        "quantization": model_quantization(model),
        "build_s": round(time.perf_counter() - start, 1),
        "stored_gib": round(stored_bytes(model) / 2**30, 2),
        "peak_rss_after_build_mb": round(peak_rss_mb()),
        "cuda_peak_after_build_gib": cuda_peak_gib(device),
    }
    print(json.dumps(report), flush=True)

    apply_diablo(model, DiaBloConfig(num_blocks=64, dropout=0.05))
    adapted = len(diablo_modules(model))
    hold_in_precision(model, PRECISION)  # bf16 frozen parts, fp32 blocks, as the service trains
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    variant = Variant("nf4-7b", model.train(), params, optimizer, PRECISION)
    batch = synthetic_batch(LLAMA2_7B["vocab_size"], args.batch_size, args.seq_len, args.seq_len // 4)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(args.steps):
        sync(device)
        begin = time.perf_counter()
        stats = train_step(variant, batch, device)
        sync(device)
        times.append(round(time.perf_counter() - begin, 2))
        losses.append(round(stats.loss, 4))
        print(json.dumps({"step": step + 1, "loss": losses[-1], "step_s": times[-1]}), flush=True)
    report |= {
        "adapted_linears": adapted,
        "trainable": trainable_parameters(model),
        "blocks_dtype": str(params[0].dtype),
        "batch": f"{args.batch_size}x{args.seq_len}",
        "train_loss": losses,
        "train_step_s": times,
        "cuda_peak_training_gib": cuda_peak_gib(device),
    }
    model.eval()
    report["decode_step_s"] = round(decode_seconds(model, args.seq_len, device), 3)
    report["peak_rss_mb"] = round(peak_rss_mb())
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
