"""Checks DiaBlo in low precision on a device against an fp32 reference; prints errors, exits 1 on failure.

Usage: python benchmarks/cuda_check.py [--device cuda|cpu] [--tokens 640]

Cases per layer shape of the default model (576->576, 576->192, 576->1536, 1536->576), each with the einsum
and the fused path: bf16 base + bf16 blocks, bf16 base + fp32 blocks, fp32 weights under bf16 autocast and,
on CUDA, fp16 autocast; the fused path with adapter dropout (the same dropped positions in fp32). Then a
tiny Llama end to end (bf16 logits and block gradients against fp32), merge, and an adapter save/load
round trip on the device. ``--device cpu`` runs the same checks with bf16 on CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from diablo_core.methods.diablo.adapter_io import load_adapter, save_adapter
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.fused import FusedDroppedDiaBlo, sample_dropped
from diablo_core.methods.diablo.layer import DiaBloLinear
from diablo_core.methods.diablo.model import apply_diablo, diablo_modules, merge_diablo

SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576)]
TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 5e-3}  # relative (norm) error against fp32
FAILURES: list[str] = []


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm().clamp_min(1e-30)).item()


def report(label: str, errors: dict[str, float], limit: float) -> None:
    ok = all(value < limit for value in errors.values())
    if not ok:
        FAILURES.append(label)
    print(f"{'ok  ' if ok else 'FAIL'} {label:<52} " + "  ".join(f"{k} {v:.2e}" for k, v in errors.items()))


def run_layer(
    layer: DiaBloLinear, x: torch.Tensor, grad: torch.Tensor, autocast: torch.dtype | None
) -> tuple:
    x = x.detach().clone().requires_grad_(True)
    layer.blocks.grad = None
    context = torch.autocast(x.device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    with context:
        y = layer(x)
    y.backward(grad.to(y.dtype))
    return y.detach(), x.grad, layer.blocks.grad


def check_layers(device: torch.device, tokens: int) -> None:
    cases = [("bf16 base, bf16 blocks", torch.bfloat16, torch.bfloat16, None)]
    cases += [("bf16 base, fp32 blocks", torch.bfloat16, torch.float32, None)]
    cases += [("fp32 weights, bf16 autocast", torch.float32, torch.float32, torch.bfloat16)]
    if device.type == "cuda":
        cases += [("fp32 weights, fp16 autocast", torch.float32, torch.float32, torch.float16)]
    for in_f, out_f in SHAPES:
        torch.manual_seed(in_f + out_f)
        reference = DiaBloLinear(nn.Linear(in_f, out_f, bias=False), 64).to(device).train()
        nn.init.normal_(reference.blocks, std=0.02)
        x, grad = torch.randn(tokens, in_f, device=device), torch.randn(tokens, out_f, device=device)
        expected = run_layer(reference, x, grad, None)
        for name, base_dtype, block_dtype, autocast in cases:
            for fused in (False, True):
                layer = DiaBloLinear(nn.Linear(in_f, out_f, bias=False), 64).to(device).train()
                layer.load_state_dict(reference.state_dict())
                layer.base.to(base_dtype)
                layer.blocks.data = layer.blocks.data.to(block_dtype)
                layer.fused = fused
                y, gx, gb = run_layer(layer, x.to(base_dtype), grad, autocast)
                assert gb.dtype == block_dtype, (gb.dtype, block_dtype)
                errors = {
                    "y": relative(y, expected[0]),
                    "dx": relative(gx, expected[1]),
                    "dA": relative(gb, expected[2]),
                }
                limit = TOLERANCE[autocast or base_dtype]
                report(f"{in_f}->{out_f} {name} {'fused' if fused else 'einsum'}", errors, limit)


def check_dropout(device: torch.device, tokens: int, p: float = 0.05) -> None:
    """The dropped-position path in bf16 against an fp32 einsum forward with the same explicit mask."""
    for in_f, out_f in SHAPES:
        torch.manual_seed(in_f * out_f)
        layer = DiaBloLinear(nn.Linear(in_f, out_f, bias=False), 64).to(device).train()
        nn.init.normal_(layer.blocks, std=0.02)
        x, grad = torch.randn(tokens, in_f, device=device), torch.randn(tokens, out_f, device=device)
        dropped = sample_dropped(x.numel(), p, device)
        mask = torch.ones(x.numel(), device=device)
        mask[dropped] = 0.0
        xr = x.clone().requires_grad_(True)
        expected_y = layer.base(xr) + layer.block_update(xr * mask.view_as(x) / (1 - p))
        expected = (expected_y.detach(), *torch.autograd.grad(expected_y, (xr, layer.blocks), grad))
        xb = x.bfloat16().requires_grad_(True)
        weight = layer.base.weight.bfloat16()
        y = FusedDroppedDiaBlo.apply(xb, weight, None, layer.blocks, dropped, p)
        gx, gb = torch.autograd.grad(y, (xb, layer.blocks), grad.bfloat16())
        errors = {"y": relative(y, expected[0]), "dx": relative(gx, expected[1])}
        errors["dA"] = relative(gb, expected[2])
        report(f"{in_f}->{out_f} bf16 base, fp32 blocks, dropout {p}", errors, TOLERANCE[torch.bfloat16])


def tiny_llama(device: torch.device, dtype: torch.dtype) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=192, intermediate_size=512, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, vocab_size=512,
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    apply_diablo(model, DiaBloConfig(num_blocks=16, dropout=0.0))
    torch.manual_seed(1)
    for module in diablo_modules(model).values():
        nn.init.normal_(module.blocks, std=0.02)
    return model.train()


def check_model(device: torch.device) -> None:
    ids = torch.randint(0, 512, (2, 64), generator=torch.Generator().manual_seed(0)).to(device)
    reference = tiny_llama(device, torch.float32)
    expected_loss = reference(ids, labels=ids).loss
    expected_loss.backward()
    for fused in (False, True):
        model = tiny_llama(device, torch.bfloat16)
        for module in diablo_modules(model).values():
            module.fused = fused
        loss = model(ids, labels=ids).loss
        loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
        expected = {name: p.grad for name, p in reference.named_parameters() if p.requires_grad}
        worst = max(relative(grads[name], expected[name]) for name in grads)
        errors = {"loss": abs(loss.item() - expected_loss.item()) / expected_loss.item(), "dA(max)": worst}
        report(f"tiny llama bf16 {'fused' if fused else 'einsum'}", errors, 6e-2)
    model = tiny_llama(device, torch.bfloat16).eval()
    with torch.no_grad():
        unmerged = model(ids).logits
        with tempfile.TemporaryDirectory() as directory:
            save_adapter(model, directory)
            fresh = LlamaForCausalLM(model.config).to(device=device, dtype=torch.bfloat16).eval()
            fresh.load_state_dict(
                {k.replace(".base.", "."): v for k, v in model.state_dict().items() if "blocks" not in k}
            )
            load_adapter(fresh, directory)
            report("bf16 save/load round trip", {"logits": relative(fresh(ids).logits, unmerged)}, 1e-6)
        merge_diablo(model)
        report("bf16 merged vs unmerged", {"logits": relative(model(ids).logits, unmerged)}, 3e-2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", type=int, default=640)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__} device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    check_layers(device, args.tokens)
    check_dropout(device, args.tokens)
    check_model(device)
    print("FAILED: " + ", ".join(FAILURES) if FAILURES else "all checks passed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
