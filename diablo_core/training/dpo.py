"""Direct Preference Optimisation on DiaBlo blocks, with the adapter switched off as the reference policy.

For a pair (prompt x, preferred y_c, non-preferred y_r) the loss is the sigmoid DPO loss

    -log σ(β · ((log π(y_c|x) - log π_ref(y_c|x)) - (log π(y_r|x) - log π_ref(y_r|x))))

where log π(y|x) sums the answer tokens' log-probabilities. π is the adapted model; π_ref is the SAME model
with every DiaBlo layer off (``diablo_disabled``): the blocks start at zero, so that is exactly the base the
run started from, and no second copy of the base is ever loaded. The implicit rewards are
``β · (log π - log π_ref)``; the reward margin is chosen minus rejected, the reward accuracy the share of
pairs whose chosen reward is higher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diablo_core.data.preferences import PreferencePair
from diablo_core.methods.diablo.model import diablo_disabled
from diablo_core.spec.preference import DEFAULT_BETA
from diablo_core.training.loss import StepStats, collate, response_logits, target_mask
from diablo_core.training.mixed_precision import autocast_for


def sequence_log_probs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's learned tokens, and the number of them predicted by argmax.

    Returns:
        ``(log_probs, correct)`` of shape (B,) each: float with grad, and integer.
    """
    rows = target_mask(batch["labels"]).nonzero()[:, 0]  # (K,) row of each learned position
    logits, targets = response_logits(model, batch)  # (K, V), (K,)
    token_log_probs = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]  # (K,)
    size = batch["labels"].shape[0]
    log_probs = torch.zeros(size, device=logits.device).index_add(0, rows, token_log_probs)  # (B,)
    hits = (logits.detach().argmax(dim=-1) == targets).long()  # (K,)
    correct = torch.zeros(size, dtype=torch.long, device=logits.device).index_add(0, rows, hits)  # (B,)
    return log_probs, correct


@dataclass
class PairScores:
    """Per-pair DPO loss and rewards of one micro-batch, each of shape (P,)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    chosen_correct: int
    chosen_targets: int
    tokens: int


def score_pairs(
    model: nn.Module, pairs: list[PreferencePair], beta: float, pad_token_id: int, device: str, precision: str
) -> PairScores:
    """Policy and reference log-probabilities of ``pairs`` (chosen rows first), and their DPO losses."""
    examples = [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs]
    batch = {k: v.to(device) for k, v in collate(examples, pad_token_id).items()}  # (2P, T) each
    count = len(pairs)
    with autocast_for(precision, device):
        policy, correct = sequence_log_probs(model, batch)  # (2P,)
        with torch.no_grad(), diablo_disabled(model):
            reference, _ = sequence_log_probs(model, batch)  # (2P,)
    rewards = beta * (policy - reference)  # (2P,) with grad
    chosen, rejected = rewards[:count], rewards[count:]  # (P,), (P,)
    losses = -F.logsigmoid(chosen - rejected)  # (P,)
    targets = target_mask(batch["labels"][:count]).sum()
    return PairScores(
        losses=losses,
        chosen_rewards=chosen.detach(),
        rejected_rewards=rejected.detach(),
        chosen_correct=int(correct[:count].sum()),
        chosen_targets=int(targets),
        tokens=int(batch["attention_mask"].sum()),
    )


class DPO:
    """The DPO objective for ``train(..., objective=DPO(beta))`` over ``PreferencePair`` examples.

    ``accuracy`` is the token accuracy on the preferred answers (as a supervised run reports it); the
    DPO metrics are ``reward_margin`` and ``reward_accuracy``.
    """

    def __init__(self, beta: float = DEFAULT_BETA) -> None:
        if not beta > 0:
            raise ValueError(f"beta must be greater than 0, got {beta!r}")
        self.beta = beta

    def accumulate(
        self,
        model: nn.Module,
        batch: list[PreferencePair],
        micro_batch_size: int,
        pad_token_id: int,
        device: str,
        precision: str,
        scaler: torch.amp.GradScaler | None,
    ) -> StepStats:
        """Gradients of the batch's mean pair loss, micro-batch by micro-batch."""
        totals = _Totals()
        for start in range(0, len(batch), micro_batch_size):
            chunk = batch[start : start + micro_batch_size]
            scores = score_pairs(model, chunk, self.beta, pad_token_id, device, precision)
            loss = scores.losses.sum() / len(batch)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            totals.add(scores)
        return totals.stats()

    def evaluate(
        self,
        model: nn.Module,
        examples: list[PreferencePair],
        batch_size: int,
        pad_token_id: int,
        device: str,
        precision: str,
    ) -> dict[str, float]:
        """Mean DPO loss, token accuracy on preferred answers, reward margin and accuracy (eval mode)."""
        was_training = model.training
        model.eval()
        totals = _Totals()
        with torch.no_grad():
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                totals.add(score_pairs(model, chunk, self.beta, pad_token_id, device, precision))
        model.train(was_training)
        stats = totals.stats()
        return {"loss": stats.loss, "accuracy": stats.accuracy, "tokens": float(stats.tokens), **stats.extra}


class _Totals:
    """Sums of a batch's pair scores, turned into means at the end."""

    def __init__(self) -> None:
        self.loss = self.margin = 0.0
        self.pairs = self.wins = self.correct = self.targets = self.tokens = 0

    def add(self, scores: PairScores) -> None:
        margins = scores.chosen_rewards - scores.rejected_rewards  # (P,)
        self.loss += float(scores.losses.detach().sum())
        self.margin += float(margins.sum())
        self.wins += int((margins > 0).sum())
        self.pairs += len(margins)
        self.correct += scores.chosen_correct
        self.targets += scores.chosen_targets
        self.tokens += scores.tokens

    def stats(self) -> StepStats:
        pairs = max(1, self.pairs)
        extra = {"reward_margin": self.margin / pairs, "reward_accuracy": self.wins / pairs}
        accuracy = self.correct / max(1, self.targets)
        return StepStats(self.loss / pairs, accuracy, self.targets, self.tokens, extra)
