"""Training a DiaBlo adapter: AdamW over the blocks, warm-up + decay, gradient accumulation, checkpoints.

The loop in ``_loop`` reads top to bottom: take the next effective batch of the epoch's shuffled order,
accumulate gradients over its micro-batches, clip, step, report progress, evaluate and checkpoint at
their intervals. Progress leaves through callbacks; nothing here knows about jobs, HTTP or databases.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diablo_core.errors import ConfigError, DatasetError
from diablo_core.evaluation.examples import EvalExample
from diablo_core.spec.training import TrainingConfig
from diablo_core.training.best import BEST_ADAPTER_DIR, BEST_FILE, BestTracker, best_adapter_step
from diablo_core.training.callbacks import CallbackList, TrainingCallback, TrainingProgress
from diablo_core.training.checkpoints import (
    Fence,
    checkpoints_root,
    load_checkpoint,
    replace_dir,
    staging_dir,
    unfenced,
)
from diablo_core.training.distributed import from_main, join_world, leave_world
from diablo_core.training.evaluation import RunEvaluation
from diablo_core.training.objective import SUPERVISED, Objective
from diablo_core.training.run_state import TrainingRun
from diablo_core.training.sharding import gathered_state, place_model

__all__ = ["TrainingCallback", "TrainingConfig", "TrainingProgress", "TrainingResult", "train"]


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
        eval_metrics: Final evaluation: validation ``{"loss", "accuracy", "tokens"}`` and, with evaluation
            examples, ``{"exact_match", "contains"}`` (None without held-out data).
        history: Per-step and per-evaluation metric records.
        trained_tokens: Non-padding tokens processed (forward and backward) in total.
        train_seconds: Wall time spent in training steps during this call (excluding evaluation/checkpoints).
        adapter_dir: ``<output_dir>/adapter`` with the final adapter (None when stopped).
        checkpoint_dir: Most recent checkpoint written, if any.
        precision: The precision the run used, resolved (``"fp32"``, ``"bf16"`` or ``"fp16"``).
        early_stopped: Early stopping ended the run before ``total_steps`` (the adapters are saved).
        best_step: Step of the best evaluation: the lowest validation loss (runs with early stopping), or
            the highest exact match (runs with ``eval_answers``; ties: the lower validation loss).
        best_eval_loss: Its validation loss (None without validation examples).
        best_exact_match: Its exact match (runs with ``eval_answers``).
        best_adapter_dir: ``<output_dir>/best-adapter``, the adapter of ``best_step`` (None without one).
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
    precision: str = "fp32"
    early_stopped: bool = False
    best_step: int | None = None
    best_eval_loss: float | None = None
    best_exact_match: float | None = None
    best_adapter_dir: Path | None = None


def _evaluate(run: TrainingRun, evaluation: RunEvaluation, callbacks: CallbackList) -> dict[str, float]:
    metrics = evaluation.measure(run)
    record = {f"eval_{key}": value for key, value in metrics.items() if key != "tokens"}
    run.state.history.append({"step": run.state.step, **record})
    callbacks.on_eval(run.state.step, metrics)
    return metrics


def _is_evaluation(record: dict[str, Any]) -> bool:
    return any(key.startswith("eval_") for key in record)


def _due(step: int, every: int | None) -> bool:
    return every is not None and step % every == 0


def train(
    model: nn.Module,
    tokenizer: Any,
    train_examples: list[Any],
    config: TrainingConfig,
    *,
    valid_examples: list[Any] | None = None,
    eval_answers: list[EvalExample] | None = None,
    output_dir: Path,
    callbacks: list[Any] | None = None,
    resume_from: Path | None = None,
    fence: Fence = unfenced,
    objective: Objective = SUPERVISED,
) -> TrainingResult:
    """Trains the adapter (DiaBlo blocks or LoRA matrices, already applied) of ``model`` on tokenized data.

    The run's precision is resolved first (``config.precision``); the frozen weights of ``model`` are cast in
    place to its storage dtype (bf16 halves their memory) and the blocks to float32, and stay so afterwards.

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
        eval_answers: Optional held-out chat examples: each evaluation also answers (at most
            ``TRAINING_EVAL_EXAMPLES`` of) them greedily and reports ``exact_match`` and ``contains``; the
            best adapter is then the one of the best exact match (``training.evaluation``). Not under FSDP.
        output_dir: Directory for checkpoints and the final adapter.
        callbacks: Objects with any of ``on_progress(progress) -> bool | None``, ``on_eval(step, metrics)``,
            ``on_checkpoint(step, path, metrics)``.
        resume_from: A checkpoint directory of an earlier run with the same data and settings; the result
            equals that of an uninterrupted run.
        fence: Runs each placement of a checkpoint or of the final adapter (and checkpoint pruning) only
            while the caller may still write; a refused checkpoint is skipped, a refused adapter gives
            ``adapter_dir=None``.
        objective: What each step optimises: supervised cross-entropy over ``TokenizedExample`` lists by
            default; ``training.dpo.DPO(beta)`` over ``PreferencePair`` lists (single process only).

    Returns:
        The TrainingResult.

    Raises:
        DatasetError: No training examples.
        ConfigError: No DiaBlo layers, or a checkpoint from a different run (or another precision), or
            ``objective_not_distributed`` for a non-supervised objective in a distributed run, or
            ``evaluation_not_sharded`` for ``eval_answers`` under FSDP.
        ValueError: ``precision="fp16"`` on a device other than CUDA.
    """
    if not train_examples:
        raise DatasetError("there are no training examples", "empty_dataset")
    output_dir = Path(output_dir)
    hooks = CallbackList(callbacks or [])
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    world = join_world(config.strategy, config.device)
    try:
        if world is not None and objective is not SUPERVISED:
            message = f"{type(objective).__name__} training runs in a single process, not under torchrun"
            raise ConfigError(message, "objective_not_distributed")
        if world is not None and world.strategy == "fsdp" and eval_answers:
            message = "answering evaluation examples needs the whole model in each process: use ddp, not fsdp"
            raise ConfigError(message, "evaluation_not_sharded")
        run = TrainingRun(
            model,
            tokenizer,
            train_examples,
            replace(config, device=world.device) if world else config,
            fence,
            objective,
        )
        if resume_from is not None:
            run.state = load_checkpoint(
                Path(resume_from), model, run.optimizer, run.scheduler, run.fingerprint(), run.precision
            )
            run.state.precision = run.precision  # an older checkpoint recorded none
            run.restore_scaler()
        if world is not None:
            run.world, run.forward_model = world, place_model(run, world)
        evaluation = RunEvaluation(valid_examples, eval_answers, tokenizer)
        return _loop(run, evaluation, output_dir, hooks)
    finally:
        leave_world(world)


def _loop(
    run: TrainingRun, evaluation: RunEvaluation, output_dir: Path, hooks: CallbackList
) -> TrainingResult:
    config, model = run.config, run.model
    was_training = model.training
    if config.gradient_checkpointing:
        _set_checkpointing(model, True)
    model.to(config.device).train()
    stopped, eval_metrics = False, None
    best = evaluation.tracker(config.early_stopping_patience, run.state.history)
    try:
        while run.state.step < run.total_steps and not stopped and not (best and best.exhausted):
            run.optimizer_step(run.next_batch())
            run.state.history.append(dict(run.last))
            stopped = (
                run.any_rank(bool(hooks.on_progress(run.progress()))) and run.state.step < run.total_steps
            )
            if evaluation.active and _due(run.state.step, config.eval_every) and not stopped:
                eval_metrics = _evaluate(run, evaluation, hooks)
                _keep_if_best(run, best, eval_metrics, output_dir)
            if stopped or _due(run.state.step, config.checkpoint_every) or _epoch_checkpoint_due(run):
                run.checkpoint(checkpoints_root(output_dir), hooks, {**run.last, **_prefixed(eval_metrics)})
        if evaluation.active and not stopped and not _is_evaluation(run.state.history[-1]):
            eval_metrics = _evaluate(run, evaluation, hooks)
            _keep_if_best(run, best, eval_metrics, output_dir)
    finally:
        if config.gradient_checkpointing:
            _set_checkpointing(model, False)
        model.train(was_training)
    adapter_dir = None if stopped else _save_final(run, output_dir)
    return _with_best(_result(run, stopped, eval_metrics, adapter_dir), best, output_dir)


def _keep_if_best(
    run: TrainingRun, best: BestTracker | None, metrics: dict[str, float], output_dir: Path
) -> None:
    """Save the adapter as the best one when this evaluation is the best so far."""
    if best is not None and best.observe(run.state.step, metrics.get("loss"), metrics.get("exact_match")):
        _save_final(run, output_dir, BEST_ADAPTER_DIR, best.note())


def _with_best(result: TrainingResult, best: BestTracker | None, output_dir: Path) -> TrainingResult:
    """Add early stopping's outcome; the best adapter only if the one on disk is of the best step."""
    if best is None or best.best_step is None:
        return result
    result.early_stopped = not result.stopped and best.exhausted and result.steps < result.total_steps
    result.best_step, result.best_eval_loss = best.best_step, best.finite_loss
    result.best_exact_match = best.best_exact_match
    directory = output_dir / BEST_ADAPTER_DIR
    result.best_adapter_dir = directory if best_adapter_step(directory) == best.best_step else None
    return result


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


def _save_final(
    run: TrainingRun, output_dir: Path, name: str = "adapter", note: dict[str, Any] | None = None
) -> Path | None:
    """Write the adapter to ``output_dir/<name>`` (with ``note`` as ``best.json``) through the fence (rank 0
    only); None if it refused."""
    gathered = gathered_state(run, run.world) if run.world else None  # every rank joins the gather
    final = output_dir / name
    placed = False
    if run.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        tensors = gathered.adapter if gathered else None
        staging = staging_dir(output_dir, final.name)
        run.method.save(run.model, staging, base_model=run.identity, tensors=tensors)
        if note is not None:
            (staging / BEST_FILE).write_text(json.dumps(note))
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
        precision=run.precision,
    )
