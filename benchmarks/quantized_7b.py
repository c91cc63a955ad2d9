"""DiaBlo on a LLaMA-2-7B-shaped NF4 base built layer by layer: peak RSS, training step and decode step time.

The model is created on the meta device (no memory), then every decoder linear is materialised with random
weights and quantized to NF4 at once, one at a time, so the full-precision model never exists: the peak
while building is the packed model plus one fp32 linear. Embeddings, norms and the head are materialised in
the compute dtype. Random weights make the numbers about memory and time only.

    OMP_NUM_THREADS=2 python benchmarks/quantized_7b.py --steps 2 --seq-len 64
"""

from __future__ import annotations

import argparse
import json
import re
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
from diablo_core.methods.diablo.model import apply_diablo, trainable_parameters
from diablo_core.models.quantization import quantize_linear, stored_bytes


def rss_mb(field: str = "VmRSS") -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024


@torch.no_grad()
def build(dtype: torch.dtype, layers: int) -> nn.Module:
    """The 7B-shaped model with NF4 decoder linears, quantized as each is materialised."""
    config = LlamaConfig(**{**LLAMA2_7B, "num_hidden_layers": layers})
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(0)
    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                real = nn.Linear(child.in_features, child.out_features, bias=False)  # fp32, on the CPU
                real.weight.normal_(0.0, 0.02, generator=generator)
                setattr(parent, name, quantize_linear(real, "nf4", dtype, "cpu"))
    for module in model.modules():
        for name, parameter in list(module.named_parameters(recurse=False)):
            if parameter.is_meta:
                value = torch.empty(parameter.shape, dtype=dtype)
                value.fill_(1.0) if value.dim() == 1 else value.normal_(0.0, 0.02, generator=generator)
                setattr(module, name, nn.Parameter(value, requires_grad=False))
    model.model.rotary_emb = LlamaRotaryEmbedding(config)  # its buffers were built on the meta device
    return model.eval()


@torch.no_grad()
def decode_seconds(model: nn.Module, prompt: int) -> float:
    """Time of one decode forward (one new token) after a prefill of ``prompt`` tokens."""
    ids = torch.randint(0, LLAMA2_7B["vocab_size"], (1, prompt))  # (1, T)
    cache = model(input_ids=ids, use_cache=True).past_key_values
    start = time.perf_counter()
    model(input_ids=ids[:, -1:], past_key_values=cache, use_cache=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16
    start = time.perf_counter()
    model = build(dtype, args.layers)
    report = {"layers": args.layers, "build_s": round(time.perf_counter() - start, 1)}
    report |= {"stored_gib": round(stored_bytes(model) / 2**30, 2), "rss_after_build_mb": round(rss_mb())}
    report["decode_step_s"] = round(decode_seconds(model, args.seq_len), 2)
    apply_diablo(model, DiaBloConfig(num_blocks=64, dropout=0.05))
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    variant = Variant("nf4-7b", model.train(), params, torch.optim.AdamW(params, lr=1e-4))
    batch = synthetic_batch(LLAMA2_7B["vocab_size"], 1, args.seq_len, args.seq_len // 4)
    times = []
    for _ in range(args.steps):
        begin = time.perf_counter()
        train_step(variant, batch, "cpu")
        times.append(round(time.perf_counter() - begin, 1))
    report |= {"trainable": trainable_parameters(model), "train_step_s": times}
    report |= {"peak_rss_mb": round(rss_mb("VmHWM")), "rss_mb": round(rss_mb())}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
