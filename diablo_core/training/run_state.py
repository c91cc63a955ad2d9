"""The state of one training call: optimizer, scheduler, data position and timing, one step at a time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diablo_core.data.tokenization import TokenizedExample
from diablo_core.errors import ConfigError
from diablo_core.methods.adapters import method_of
from diablo_core.models.identity import attach_identity, model_identity
from diablo_core.precision.hardware import resolve_precision
from diablo_core.spec.training import TrainingConfig, count_total_steps
from diablo_core.training.callbacks import CallbackList, TrainingProgress
from diablo_core.training.checkpoints import Fence, TrainerState, save_checkpoint, unfenced
from diablo_core.training.distributed import World, accumulate_shard, any_rank, from_main
from diablo_core.training.mixed_precision import grad_scaler_for, hold_in_precision
from diablo_core.training.objective import SUPERVISED, Objective
from diablo_core.training.schedule import build_scheduler
from diablo_core.training.sharding import gathered_state

# What every step reports under its own name; the objective's further metrics go in ``progress.metrics``.
BASE_METRICS = frozenset({"step", "loss", "accuracy", "learning_rate"})


def _pad_token_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ConfigError("the tokenizer has neither a pad token nor an eos token", "tokenizer_no_pad")
    return int(pad)


def _epoch_order(seed: int, epoch: int, count: int) -> list[int]:
    """The shuffled example order of one epoch.

    A fresh generator per epoch makes the order a pure function of (seed, epoch): a resumed run rebuilds it
    from the saved epoch and position, so no shuffle-generator state needs saving.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(count, generator=generator).tolist()


class TrainingRun:
    """Everything one call to ``train`` changes as it goes; ``training._loop`` drives it."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        examples: list[TokenizedExample],
        config: TrainingConfig,
        fence: Fence = unfenced,
        objective: Objective = SUPERVISED,
    ):
        self.model, self.config, self.examples, self.fence = model, config, examples, fence
        self.objective = objective
        self.pad_id = _pad_token_id(tokenizer)
        method = method_of(model)
        if method is None:
            message = "the model has no adapter: call apply_diablo (or apply_lora) first"
            raise ConfigError(message, "diablo_not_applied")
        self.method = method
        self.precision = resolve_precision(config.precision, config.device)
        # The identity names the weights as loaded; casting them must not change which base an adapter fits.
        self.identity = model_identity(model)
        attach_identity(model, self.identity)
        hold_in_precision(model, self.precision)  # before the optimizer: its states follow the fp32 blocks
        self.scaler = grad_scaler_for(self.precision, config.device)
        self.params = method.trainable(model)
        self.total_steps = count_total_steps(
            len(examples), config.batch_size, config.n_epochs, config.max_steps
        )
        self.build_optimizer()
        self.state = TrainerState(
            step=0,
            epoch=0,
            position=0,
            trained_tokens=0,
            fingerprint=self.fingerprint(),
            precision=self.precision,
        )
        self.train_seconds, self.session_tokens, self.session_steps = 0.0, 0, 0
        self.last: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        # A distributed run's World and the module to train through (``sharding.place_model``).
        self.world: World | None = None
        self.forward_model: nn.Module = model

    def build_optimizer(self) -> None:
        """AdamW and the schedule over the model's current adapter (again after sharding replaces it)."""
        self.params = self.method.trainable(self.model)
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=self.config.learning_rate,
            betas=self.config.adam_betas,
            eps=self.config.adam_eps,
            weight_decay=self.config.weight_decay,
        )
        self.scheduler = build_scheduler(
            self.optimizer, self.config.scheduler, self.config.warmup_steps, self.total_steps
        )

    @property
    def is_main(self) -> bool:
        """Whether this process writes files: a single process, or rank 0."""
        return self.world is None or self.world.is_main

    def any_rank(self, flag: bool) -> bool:
        """``flag`` of this process, or True on every rank when any rank raised it."""
        return flag if self.world is None else any_rank(flag, self.world.device)

    def fingerprint(self) -> dict[str, Any]:
        keys = ("seed", "batch_size", "learning_rate", "scheduler", "warmup_steps")
        return {
            **{k: getattr(self.config, k) for k in keys},
            "num_examples": len(self.examples),
            "total_steps": self.total_steps,
        }

    def next_batch(self) -> list[TokenizedExample]:
        """The next effective batch of the current epoch's order (moving to the next epoch when exhausted)."""
        if self.state.position >= len(self.examples):
            self.state.epoch, self.state.position = self.state.epoch + 1, 0
        order = _epoch_order(self.config.seed, self.state.epoch, len(self.examples))
        indices = order[self.state.position : self.state.position + self.config.batch_size]
        self.state.position += len(indices)
        return [self.examples[i] for i in indices]

    def epoch_ended(self) -> bool:
        """True right after the step that consumed the last batch of the current epoch's order."""
        return self.state.position >= len(self.examples)

    def optimizer_step(self, batch: list[TokenizedExample]) -> None:
        started = time.perf_counter()
        micro = self.config.micro_batch_size or self.config.batch_size
        if self.world is None:
            stats = self.objective.accumulate(
                self.model, batch, micro, self.pad_id, self.config.device, self.precision, self.scaler
            )
        else:
            stats = accumulate_shard(
                self.forward_model, batch, micro, self.pad_id, self.world, self.precision
            )
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self._apply_update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.train_seconds += time.perf_counter() - started
        self.state.step += 1
        self.state.trained_tokens += stats.tokens
        self.session_tokens += stats.tokens
        self.session_steps += 1
        self.last = {
            "step": self.state.step,
            "loss": stats.loss,
            "accuracy": stats.accuracy,
            "learning_rate": lr,
            **stats.extra,
        }

    def _apply_update(self) -> None:
        """AdamW step; an fp16 run's scaler skips steps with inf/nan gradients and adapts its scale."""
        if self.scaler is None:
            self.optimizer.step()
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.grad_scaler = self.scaler.state_dict()

    def restore_scaler(self) -> None:
        """After a resume: the scaler continues from the checkpoint's scale (fp16 runs only)."""
        if self.scaler is not None and self.state.grad_scaler:
            self.scaler.load_state_dict(self.state.grad_scaler)

    def progress(self) -> TrainingProgress:
        per_step = self.train_seconds / max(1, self.session_steps)
        return TrainingProgress(
            step=self.state.step,
            total_steps=self.total_steps,
            epoch=self.state.epoch,
            loss=self.last["loss"],
            learning_rate=self.last["learning_rate"],
            tokens_per_second=self.session_tokens / max(self.train_seconds, 1e-9),
            eta_seconds=per_step * (self.total_steps - self.state.step),
            trained_tokens=self.state.trained_tokens,
            accuracy=self.last["accuracy"],
            precision=self.precision,
            metrics={key: self.last[key] for key in self.last.keys() - BASE_METRICS},
        )

    def checkpoint(self, root: Path, callbacks: CallbackList, metrics: dict[str, float]) -> None:
        gathered = gathered_state(self, self.world) if self.world else None  # every rank joins the gather
        path = None
        if self.is_main:
            path = save_checkpoint(
                root,
                self.model,
                self.optimizer,
                self.scheduler,
                self.state,
                self.identity,
                keep=self.config.keep_checkpoints,
                fence=self.fence,
                gathered=gathered,
            )
        if self.world is not None:
            path = from_main(path)
        if path is None:
            return  # the fence refused: whoever runs training may no longer make anything visible
        self.last_checkpoint = path
        callbacks.on_checkpoint(self.state.step, path, metrics)
