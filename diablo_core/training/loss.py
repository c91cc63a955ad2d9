"""The training objective: summed cross-entropy and token accuracy over response tokens only."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from diablo_core.data.tokenization import IGNORE_INDEX, TokenizedExample
from diablo_core.training.mixed_precision import autocast_for


def collate(batch: list[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into ``input_ids``, ``attention_mask`` and ``labels`` tensors of shape (B, T)."""
    width = max(len(example.input_ids) for example in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for row, example in enumerate(batch):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[row, :length] = torch.tensor(example.labels, dtype=torch.long)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def target_mask(labels: torch.Tensor) -> torch.Tensor:
    """Marks the positions whose next token is learned.

    Args:
        labels: (B, T) labels aligned with the input ids (``-100`` where no loss is taken).

    Returns:
        (B, T) bool mask: position ``t`` predicts token ``t + 1``, so it is set where ``labels[:, t+1]`` is
        learned; the last position predicts nothing.
    """
    mask = torch.zeros_like(labels, dtype=torch.bool)  # (B, T)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def count_targets(batch: list[TokenizedExample]) -> int:
    """Number of learned next-token predictions in a list of examples (the loss normaliser)."""
    return sum(sum(label != IGNORE_INDEX for label in example.labels[1:]) for example in batch)


def _supports_logits_to_keep(model: nn.Module) -> bool:
    wrapped = model.module if isinstance(model, DistributedDataParallel) else model  # it passes keywords on
    return "logits_to_keep" in inspect.signature(wrapped.forward).parameters


def response_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the model and returns the logits of the learned positions with their targets.

    Only the learned positions go through the output head (``logits_to_keep`` with a boolean mask, when the
    model supports it): for short answers after long prompts that skips most of the vocabulary projection.

    Returns:
        ``(logits, targets)`` of shapes (K, V) and (K,), K = learned positions in the batch.
    """
    mask = target_mask(batch["labels"])  # (B, T)
    targets = batch["labels"][:, 1:][mask[:, :-1]]  # (K,)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    if _supports_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=mask).logits  # (K, V)
    else:
        logits = model(**inputs).logits[mask]  # (B, T, V) -> (K, V)
    return logits, targets


def response_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over learned tokens and the number predicted correctly (greedy argmax).

    Summing (rather than averaging) lets gradient accumulation divide by the token count of the whole
    effective batch, so micro-batching does not change the loss.

    Returns:
        ``(loss_sum, correct)``: a scalar tensor with grad, and a scalar integer tensor.
    """
    logits, targets = response_logits(model, batch)  # (K, V), (K,)
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    correct = (logits.detach().argmax(dim=-1) == targets).sum()
    return loss_sum, correct


def evaluate_examples(
    model: nn.Module,
    examples: list[TokenizedExample],
    batch_size: int,
    pad_token_id: int,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, float]:
    """Mean response-token loss and accuracy of ``model`` on ``examples`` (eval mode, no grad).

    ``precision`` is the run's resolved precision (its autocast applies); the model's training mode is
    restored afterwards.

    Returns:
        ``{"loss": ..., "accuracy": ..., "tokens": ...}`` averaged over all learned tokens.
    """
    was_training = model.training
    model.eval()
    loss_total, correct_total, count = 0.0, 0, 0
    with torch.no_grad(), autocast_for(precision, device):
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_token_id).items()}
            loss_sum, correct = response_loss_sum(model, batch)
            loss_total += float(loss_sum)
            correct_total += int(correct)
            count += count_targets(chunk)
    model.train(was_training)
    denominator = max(1, count)
    return {"loss": loss_total / denominator, "accuracy": correct_total / denominator, "tokens": float(count)}


@dataclass
class StepStats:
    """Loss, accuracy and size of one effective batch."""

    loss: float
    accuracy: float
    targets: int
    tokens: int
    # Further metrics of the objective (DPO: ``reward_margin``, ``reward_accuracy``).
    extra: dict[str, float] = field(default_factory=dict)


def accumulate_gradients(
    model: nn.Module,
    batch: list[TokenizedExample],
    micro_batch_size: int,
    pad_token_id: int,
    device: str = "cpu",
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    denominator: float | None = None,
) -> StepStats:
    """Runs forward and backward over ``batch`` in micro-batches, accumulating parameter gradients.

    Each micro-batch's summed loss is divided by the learned-token count of the WHOLE batch, so the
    accumulated gradient is that of the mean loss over all response tokens, however the batch is split.
    ``precision`` (resolved) picks the autocast; an fp16 run's ``scaler`` scales the loss before backward.
    A rank of a distributed run trains on its shard of a global batch and passes ``denominator``: the global
    batch's count over the number of ranks, so the gradient average across ranks is that same mean.

    Returns:
        The batch's mean loss and accuracy, learned-token count and non-padding input-token count.
    """
    total_targets = count_targets(batch)
    denominator = denominator or max(1, total_targets)
    loss_total, correct_total, tokens = 0.0, 0, 0
    for start in range(0, len(batch), micro_batch_size):
        tensors = {
            k: v.to(device) for k, v in collate(batch[start : start + micro_batch_size], pad_token_id).items()
        }
        with autocast_for(precision, device):
            loss_sum, correct = response_loss_sum(model, tensors)
        loss = loss_sum / denominator
        (scaler.scale(loss) if scaler is not None else loss).backward()
        loss_total += float(loss_sum.detach())
        correct_total += int(correct)
        tokens += int(tensors["attention_mask"].sum())
    return StepStats(loss_total / denominator, correct_total / denominator, total_targets, tokens)
