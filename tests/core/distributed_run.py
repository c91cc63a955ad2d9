"""One rank of a distributed training run on the tiny model, for tests/core/test_distributed.py.

Run it under a launcher: ``torchrun --standalone --nproc-per-node 2 -m tests.core.distributed_run OUTPUT
STRATEGY [--resume-from DIR] [--max-steps N]``. Rank 0 writes ``OUTPUT/result.json`` (steps, last checkpoint,
eval metrics); the adapter and checkpoints go where ``train`` puts them. Without a launcher it is the
one-process reference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch.distributed as dist

from diablo_core.training.loop import TrainingConfig, TrainingResult, train
from tests.core.test_training import PadOnly, adapted_model, toy_examples

# Ten examples in batches of three: the last batch of an epoch has one example, so rank 1's shard is empty
# and padded; micro-batches of two make rank 0 accumulate over two of them when a shard has three.
NUM_EXAMPLES, NUM_VALID = 10, 5


def reference_config(strategy: str, max_steps: int = 6) -> TrainingConfig:
    # fp32: exact to 1e-5 across world sizes (bf16 rounds differently when the sums are split by rank).
    return TrainingConfig(
        learning_rate=1e-2, max_steps=max_steps, batch_size=3, micro_batch_size=2, warmup_steps=0,
        eval_every=3, checkpoint_every=3, seed=3, strategy=strategy, precision="fp32",
    )  # fmt: skip


def run_training(
    output: Path, strategy: str, resume_from: Path | None = None, max_steps: int = 6
) -> TrainingResult:
    """Trains the tiny model with the reference config (dropout 0); writes result.json from rank 0."""
    result = train(
        adapted_model(),
        PadOnly(),
        toy_examples(NUM_EXAMPLES),
        reference_config(strategy, max_steps),
        valid_examples=toy_examples(NUM_VALID, seed=1),
        output_dir=output,
        resume_from=resume_from,
    )
    if not dist.is_initialized() or dist.get_rank() == 0:
        summary = {
            "steps": result.steps,
            "loss": result.train_loss,
            "eval": result.eval_metrics,
            "checkpoint": str(result.checkpoint_dir),
            "adapter": str(result.adapter_dir),
            "trained_tokens": result.trained_tokens,
        }
        (output / "result.json").write_text(json.dumps(summary))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("output", type=Path)
    parser.add_argument("strategy")
    parser.add_argument("--resume-from", type=Path)
    parser.add_argument("--max-steps", type=int, default=6)
    arguments = parser.parse_args()
    run_training(arguments.output, arguments.strategy, arguments.resume_from, arguments.max_steps)
