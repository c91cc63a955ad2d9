"""One training run's settings (``TrainingConfig``) and the step rules every part of the service shares.

Torch-free: the API resolves a job with these rules before any worker loads torch, and the training loop
(``diablo_core.training``) runs with exactly them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from diablo_core.precision.names import check_training_precision

SCHEDULERS = ("linear", "cosine")
# How one run spreads over the processes of a launch (torchrun): "auto" is DDP when several run.
STRATEGIES = ("auto", "none", "ddp", "fsdp")


def count_total_steps(num_examples: int, batch_size: int, n_epochs: int, max_steps: int | None) -> int:
    """Returns the number of optimizer steps a run takes.

    Each epoch has ``ceil(num_examples / batch_size)`` steps (the last batch may be smaller). ``max_steps``,
    when given, replaces the epoch count: the data is cycled through as many epochs as the steps need.
    """
    if max_steps is not None:
        return max_steps
    return n_epochs * math.ceil(num_examples / batch_size)


def epochs_covered(num_examples: int, batch_size: int, max_steps: int) -> int:
    """Passes over the data that ``max_steps`` steps start: the last one may be partial (2.4 epochs -> 3),
    as OpenAI reports ``n_epochs`` as an integer."""
    return math.ceil(max_steps / math.ceil(num_examples / batch_size))


def effective_warmup(warmup_steps: int, total_steps: int) -> int:
    """Returns the warm-up length actually used.

    The configured value is kept whenever it is shorter than the run (the paper's default is 100). A run that
    is not longer than its warm-up would never reach the peak learning rate nor decay, so its warm-up is cut
    to a tenth of the run instead.
    """
    if warmup_steps < total_steps:
        return warmup_steps
    return total_steps // 10


def _positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}"
        )


@dataclass
class TrainingConfig:
    """Hyperparameters of one training run (defaults from the paper's GSM8K scripts).

    Attributes:
        learning_rate: Peak AdamW learning rate.
        n_epochs: Passes over the training data (ignored when ``max_steps`` is set).
        max_steps: Optimizer steps to take; replaces ``n_epochs`` and cycles the data as needed.
        batch_size: Effective batch (examples per optimizer step).
        micro_batch_size: Examples per forward/backward; gradients accumulate over ``batch_size``
            (``None``: one micro-batch per step).
        max_length: Token limit per example, applied by whoever tokenizes (the CLI and the worker).
        warmup_steps: Linear warm-up length; a run not longer than it warms up for a tenth of its steps.
        scheduler: ``"linear"`` or ``"cosine"`` decay to zero after the warm-up.
        weight_decay: AdamW decoupled weight decay (0 in the paper).
        max_grad_norm: Gradient-norm clipping threshold; ``None`` disables clipping.
        seed: Seeds Python and torch RNGs and the per-epoch shuffle; equal seeds give equal adapters on CPU.
        gradient_checkpointing: Recompute activations in backward (non-reentrant) to save memory.
        eval_every: Evaluate on the validation set every this many steps (and always at the end).
        checkpoint_every: Write a resumable checkpoint every this many steps.
        checkpoint_each_epoch: Also write a resumable checkpoint at the end of every epoch.
        keep_checkpoints: Keep only this many most recent checkpoints (``None`` keeps all).
        early_stopping_patience: Stop when this many evaluations in a row did not lower the best validation
            loss, and keep the adapter of the best one (``None``: train every step, keep the last).
        device: Device of the model and the batches (``"cpu"``, ``"cuda"``...).
        precision: ``"auto"`` (bf16 where the device computes it natively, else fp32), ``"fp32"``, ``"bf16"``
            (frozen base stored in bf16, fp32 blocks and optimizer states) or ``"fp16"`` (CUDA only: fp16
            autocast with a gradient scaler); see ``diablo_core.training.mixed_precision``.
        strategy: Under a launcher's process group (torchrun): ``"ddp"`` replicates the model, ``"fsdp"``
            shards it; ``"auto"`` is DDP when several processes run, ``"none"`` never distributes.
            ``batch_size`` stays the global batch, split across the ranks.
        adam_betas: AdamW betas.
        adam_eps: AdamW epsilon.
    """

    learning_rate: float = 5e-4
    n_epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    micro_batch_size: int | None = None
    max_length: int = 256
    warmup_steps: int = 100
    scheduler: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    gradient_checkpointing: bool = False
    eval_every: int | None = None
    checkpoint_every: int | None = None
    checkpoint_each_epoch: bool = False
    keep_checkpoints: int | None = None
    early_stopping_patience: int | None = None
    device: str = "cpu"
    precision: str = "auto"
    strategy: str = "auto"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        for name in ("n_epochs", "batch_size", "max_length"):
            _positive(name, getattr(self, name))
        for name in ("max_steps", "micro_batch_size", "eval_every", "checkpoint_every", "keep_checkpoints"):
            _positive(name, getattr(self, name), allow_none=True)
        _positive("early_stopping_patience", self.early_stopping_patience, allow_none=True)
        if (
            isinstance(self.warmup_steps, bool)
            or not isinstance(self.warmup_steps, int)
            or self.warmup_steps < 0
        ):
            raise ValueError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm!r}")
        check_training_precision(self.precision, self.device)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        self.adam_betas = tuple(self.adam_betas)

    @property
    def accumulation_steps(self) -> int:
        """Micro-batches per optimizer step."""
        return math.ceil(self.batch_size / (self.micro_batch_size or self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return {**asdict(self), "adam_betas": list(self.adam_betas)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Builds a config from ``to_dict()`` output; unknown keys are a ValueError."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown training config field(s): {unknown}")
        return cls(**data)
