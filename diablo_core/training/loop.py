"""Training a DiaBlo adapter: AdamW over the blocks, warm-up + decay, gradient accumulation, checkpoints.

The loop in ``_loop`` reads top to bottom: take the next effective batch of the epoch's shuffled order,
accumulate gradients over its micro-batches, clip, step, report progress, evaluate and checkpoint at
their intervals. Progress leaves through callbacks; nothing here knows about jobs, HTTP or databases.
"""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diablo_core.data.tokenization import TokenizedExample
from diablo_core.errors import DatasetError
from diablo_core.methods.diablo.adapter_io import save_adapter
from diablo_core.training.callbacks import CallbackList, TrainingCallback, TrainingProgress
from diablo_core.training.checkpoints import Fence, load_checkpoint, replace_dir, staging_dir, unfenced
from diablo_core.training.distributed import evaluate_shard, from_main, join_world, leave_world
from diablo_core.training.loss import evaluate_examples
from diablo_core.training.run_state import TrainingRun
from diablo_core.training.schedule import SCHEDULERS
from diablo_core.training.sharding import gathered_state, place_model

# How one run spreads over the processes of a launch (torchrun): "auto" is DDP when several run.
STRATEGIES = ("auto", "none", "ddp", "fsdp")

__all__ = ["TrainingCallback", "TrainingConfig", "TrainingProgress", "TrainingResult", "train"]


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
        device: Device of the model and the batches (``"cpu"``, ``"cuda"``...); bf16 autocast on CUDA.
        adam_betas: AdamW betas.
        adam_eps: AdamW epsilon.
        strategy: Under a launcher's process group (torchrun): ``"ddp"`` replicates the model, ``"fsdp"``
            shards it; ``"auto"`` is DDP when several processes run, ``"none"`` never distributes.
            ``batch_size`` stays the global batch, split across the ranks.
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
    device: str = "cpu"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    strategy: str = "auto"

    def __post_init__(self) -> None:
        if not (isinstance(self.learning_rate, int | float) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        for name in ("n_epochs", "batch_size", "max_length"):
            _positive(name, getattr(self, name))
        for name in ("max_steps", "micro_batch_size", "eval_every", "checkpoint_every", "keep_checkpoints"):
            _positive(name, getattr(self, name), allow_none=True)
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


@dataclass
class TrainingResult:
    """What a run produced.

    Attributes:
        steps: Optimizer steps taken in total (including those before a resume).
        total_steps: Steps the run was planned for.
        stopped: A callback asked to stop before ``total_steps``; ``checkpoint_dir`` then holds a resumable
            checkpoint of the last finished step and ``adapter_dir`` is None.
        train_loss: Mean response-token loss of the last step.
        train_accuracy: Mean response-token accuracy of the last step.
        eval_metrics: Final validation ``{"loss", "accuracy", "tokens"}`` (None without validation data).
        history: Per-step and per-evaluation metric records.
        trained_tokens: Non-padding tokens processed (forward and backward) in total.
        train_seconds: Wall time spent in training steps during this call (excluding evaluation/checkpoints).
        adapter_dir: ``<output_dir>/adapter`` with the final adapter (None when stopped).
        checkpoint_dir: Most recent checkpoint written, if any.
    """

    steps: int
    total_steps: int
    stopped: bool
    train_loss: float | None
    train_accuracy: float | None
    eval_metrics: dict[str, float] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    trained_tokens: int = 0
    train_seconds: float = 0.0
    adapter_dir: Path | None = None
    checkpoint_dir: Path | None = None


def _evaluate(run: TrainingRun, valid: list[TokenizedExample], callbacks: CallbackList) -> dict[str, float]:
    micro = run.config.micro_batch_size or run.config.batch_size
    if run.world is None:
        metrics = evaluate_examples(run.model, valid, micro, run.pad_id, run.config.device)
    else:
        metrics = evaluate_shard(run.model, valid, micro, run.pad_id, run.world)
    run.state.history.append(
        {"step": run.state.step, "eval_loss": metrics["loss"], "eval_accuracy": metrics["accuracy"]}
    )
    callbacks.on_eval(run.state.step, metrics)
    return metrics


def _due(step: int, every: int | None) -> bool:
    return every is not None and step % every == 0


def train(
    model: nn.Module,
    tokenizer: Any,
    train_examples: list[TokenizedExample],
    config: TrainingConfig,
    *,
    valid_examples: list[TokenizedExample] | None = None,
    output_dir: Path,
    callbacks: list[Any] | None = None,
    resume_from: Path | None = None,
    fence: Fence = unfenced,
) -> TrainingResult:
    """Trains the DiaBlo blocks of ``model`` (DiaBlo already applied) on tokenized examples.

    The loss is the mean cross-entropy over response tokens (labels != -100) of the whole effective batch,
    whatever the micro-batching. Checkpoints go to ``output_dir/checkpoints/step-<n>/``; the final adapter
    to ``output_dir/adapter/``. When a callback's ``on_progress`` returns True, a checkpoint of the step just
    finished is written and the call returns with ``stopped=True`` and no final adapter, so the run can be
    resumed from ``result.checkpoint_dir``.

    Args:
        model: Model with ``apply_diablo`` applied, on ``config.device``.
        tokenizer: Its tokenizer (for the pad token id).
        train_examples: Tokenized training examples.
        config: Hyperparameters.
        valid_examples: Optional tokenized validation examples.
        output_dir: Directory for checkpoints and the final adapter.
        callbacks: Objects with any of ``on_progress(progress) -> bool | None``, ``on_eval(step, metrics)``,
            ``on_checkpoint(step, path, metrics)``.
        resume_from: A checkpoint directory of an earlier run with the same data and settings; the result
            equals that of an uninterrupted run.
        fence: Runs each placement of a checkpoint or of the final adapter (and checkpoint pruning) only
            while the caller may still write; a refused checkpoint is skipped, a refused adapter gives
            ``adapter_dir=None``.

    Returns:
        The TrainingResult.

    Raises:
        DatasetError: No training examples.
        ConfigError: No DiaBlo layers, or a checkpoint from a different run.
    """
    if not train_examples:
        raise DatasetError("there are no training examples", "empty_dataset")
    output_dir = Path(output_dir)
    hooks = CallbackList(callbacks or [])
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    world = join_world(config.strategy, config.device)
    try:
        run = TrainingRun(
            model, tokenizer, train_examples, replace(config, device=world.device) if world else config, fence
        )
        if resume_from is not None:
            run.state = load_checkpoint(
                Path(resume_from), model, run.optimizer, run.scheduler, run.fingerprint()
            )
        if world is not None:
            run.world, run.forward_model = world, place_model(run, world)
        return _loop(run, valid_examples, output_dir, hooks)
    finally:
        leave_world(world)


def _loop(
    run: TrainingRun, valid: list[TokenizedExample] | None, output_dir: Path, hooks: CallbackList
) -> TrainingResult:
    config, model = run.config, run.model
    was_training = model.training
    if config.gradient_checkpointing:
        _set_checkpointing(model, True)
    model.to(config.device).train()
    stopped, eval_metrics = False, None
    try:
        while run.state.step < run.total_steps and not stopped:
            run.optimizer_step(run.next_batch())
            run.state.history.append(dict(run.last))
            stopped = (
                run.any_rank(bool(hooks.on_progress(run.progress()))) and run.state.step < run.total_steps
            )
            if valid and _due(run.state.step, config.eval_every) and not stopped:
                eval_metrics = _evaluate(run, valid, hooks)
            if stopped or _due(run.state.step, config.checkpoint_every) or _epoch_checkpoint_due(run):
                run.checkpoint(output_dir / "checkpoints", hooks, {**run.last, **_prefixed(eval_metrics)})
        if valid and not stopped and not (run.state.history and "eval_loss" in run.state.history[-1]):
            eval_metrics = _evaluate(run, valid, hooks)
    finally:
        if config.gradient_checkpointing:
            _set_checkpointing(model, False)
        model.train(was_training)
    adapter_dir = None if stopped else _save_final(run, output_dir)
    return _result(run, stopped, eval_metrics, adapter_dir)


def _epoch_checkpoint_due(run: TrainingRun) -> bool:
    return run.config.checkpoint_each_epoch and run.epoch_ended()


def _set_checkpointing(model: nn.Module, enable: bool) -> None:
    """Turns non-reentrant activation checkpointing on or off.

    Reentrant checkpoints would leave the adapter gradients at None behind a frozen embedding.
    """
    if enable:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()


def _prefixed(metrics: dict[str, float] | None) -> dict[str, float]:
    return {f"eval_{k}": v for k, v in (metrics or {}).items()}


def _save_final(run: TrainingRun, output_dir: Path) -> Path | None:
    """Write the adapter to ``output_dir/adapter`` through the fence (rank 0 only); None if it refused."""
    gathered = gathered_state(run, run.world) if run.world else None  # every rank joins the gather
    final = output_dir / "adapter"
    placed = False
    if run.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        tensors = gathered.adapter if gathered else None
        staging = staging_dir(output_dir, final.name)
        save_adapter(run.model, staging, base_model=run.identity, tensors=tensors)
        try:
            placed = run.fence(staging, lambda: replace_dir(staging, final))
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # already renamed away when placed
    if run.world is not None:
        placed = from_main(placed)
    return final if placed else None


def _result(
    run: TrainingRun, stopped: bool, eval_metrics: dict[str, float] | None, adapter_dir: Path | None
) -> TrainingResult:
    return TrainingResult(
        steps=run.state.step,
        total_steps=run.total_steps,
        stopped=stopped,
        train_loss=run.last.get("loss"),
        train_accuracy=run.last.get("accuracy"),
        eval_metrics=eval_metrics,
        history=run.state.history,
        trained_tokens=run.state.trained_tokens,
        train_seconds=run.train_seconds,
        adapter_dir=adapter_dir,
        checkpoint_dir=run.last_checkpoint,
    )
