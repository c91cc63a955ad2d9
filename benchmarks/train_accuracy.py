"""Arithmetic accuracy of DiaBlo vs LoRA at matched parameter counts, equal steps and schedule.

Used by ``train_throughput.py --accuracy``. Both adapters train with the same loop (AdamW, linear decay after
a warm-up of a tenth of the steps, gradient clipping 1.0, dropout 0.05, the same shuffled batches) on
``data/arithmetic/train.jsonl`` and are scored by greedy exact match on ``test.jsonl``
(``examples/arithmetic/generate.py`` writes both).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.train_variants import diablo_count, matched_rank, with_lora
from diablo_core.data.datasets import read_examples
from diablo_core.data.tokenization import TokenizedExample, tokenize_examples
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.models.loading import load_base_model
from diablo_core.training.loss import accumulate_gradients
from diablo_core.training.schedule import build_scheduler

ROOT = Path(__file__).resolve().parents[1]


def _evaluate_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "arithmetic_evaluate", ROOT / "examples/arithmetic/evaluate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fit(
    model: Any, examples: list[TokenizedExample], steps: int, lr: float, batch_size: int, pad: int
) -> None:
    """The shared training loop: identical batches and schedule for every adapter."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    scheduler = build_scheduler(optimizer, "linear", max(1, steps // 10), steps)
    order: list[int] = []
    model.train()
    for step in range(steps):
        if len(order) < batch_size:
            generator = torch.Generator().manual_seed(step)
            order += torch.randperm(len(examples), generator=generator).tolist()
        batch, order = [examples[i] for i in order[:batch_size]], order[batch_size:]
        accumulate_gradients(model, batch, batch_size, pad)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def compare_accuracy(
    steps: int,
    lr: float,
    batch_size: int,
    data_dir: Path = ROOT / "data/arithmetic",
    limit: int | None = None,
    quantization: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Trains DiaBlo (N=64) and matched-rank LoRA and returns their exact match, counts and train time.

    With ``quantization="nf4"`` both train on the NF4 base, LoRA then being QLoRA.
    """
    evaluate = _evaluate_module()
    results = {}
    for variant in ("diablo", "lora-matched"):
        loaded = load_base_model("default", quantization=quantization)
        model, tokenizer = loaded.model, loaded.tokenizer
        if variant == "diablo":
            apply_diablo(model, DiaBloConfig(num_blocks=64, dropout=0.05))
        else:
            model = with_lora(model, matched_rank(model, diablo_count(model)), dropout=0.05)
        examples = tokenize_examples(read_examples(data_dir / "train.jsonl"), tokenizer, 256)
        started = time.perf_counter()
        fit(model, examples, steps, lr, batch_size, tokenizer.pad_token_id)
        seconds = time.perf_counter() - started
        accuracy = evaluate.exact_match(model, tokenizer, data_dir / "test.jsonl", limit)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        results[variant] = {"exact_match": accuracy, "trainable": trainable, "train_seconds": seconds}
        print(json.dumps({variant: results[variant]}), flush=True)
    return results
