"""DPO on DiaBlo blocks: the switched-off adapter is the reference, the loss is the formula, it learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diablo_core.data.preferences import tokenize_preference
from diablo_core.generation.decoding import generate
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, diablo_disabled, diablo_modules
from diablo_core.training.dpo import DPO, score_pairs, sequence_log_probs
from diablo_core.training.loop import TrainingConfig, train
from diablo_core.training.loss import collate
from tests.core.test_preferences import pair
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer

WORDS = [
    "apple", "river", "cloud", "stone", "tiger", "lemon", "piano", "candle", "forest", "rocket",
    "garden", "mirror", "violet", "bridge", "castle", "ocean", "pepper", "silver", "window", "planet",
    "copper", "meadow", "falcon", "harbor", "island", "jacket", "kettle", "ladder", "marble", "needle",
]  # fmt: skip
PREFERRED_WORD = "Yes"


def word_pair(word: str) -> dict:
    """The preferred answer starts with a fixed word; the other is the bare word."""
    return pair(f"Name: {word}", f"{PREFERRED_WORD} {word}", word)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


def adapted(tokenizer):
    model = make_tiny_model(len(tokenizer), seed=0)
    apply_diablo(model, DiaBloConfig(num_blocks=8, dropout=0.0))
    return model


def perturb(model) -> None:
    with torch.no_grad():
        for module in diablo_modules(model).values():
            module.blocks.normal_(0.0, 0.05)


def test_switched_off_adapter_is_the_base_model_and_is_restored(tokenizer):
    model, base = adapted(tokenizer), make_tiny_model(len(tokenizer), seed=0)
    perturb(model)
    ids = torch.tensor([tokenizer("Name: fox")["input_ids"]])  # (1, T)
    adapted_logits = model(ids).logits
    with diablo_disabled(model):
        torch.testing.assert_close(model(ids).logits, base(ids).logits, rtol=0, atol=0)
    torch.testing.assert_close(model(ids).logits, adapted_logits, rtol=0, atol=0)
    assert not torch.equal(adapted_logits, base(ids).logits)


def test_loss_and_rewards_follow_the_sigmoid_dpo_formula(tokenizer):
    model, base = adapted(tokenizer), make_tiny_model(len(tokenizer), seed=0)
    perturb(model)
    pairs = [tokenize_preference(word_pair(w), tokenizer, None) for w in WORDS[:3]]
    beta, pad = 0.3, tokenizer.pad_token_id
    scores = score_pairs(model, pairs, beta, pad, "cpu", "fp32")
    chosen = collate([p.chosen for p in pairs], pad)
    rejected = collate([p.rejected for p in pairs], pad)
    with torch.no_grad():
        pi_c, pi_r = sequence_log_probs(model, chosen)[0], sequence_log_probs(model, rejected)[0]
        ref_c, ref_r = sequence_log_probs(base, chosen)[0], sequence_log_probs(base, rejected)[0]
    expected = -F.logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))  # (P,)
    torch.testing.assert_close(scores.losses.detach(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores.chosen_rewards, beta * (pi_c - ref_c), rtol=1e-5, atol=1e-6)
    assert scores.losses.requires_grad


def test_a_fresh_adapter_scores_every_pair_at_log_two(tokenizer):
    model = adapted(tokenizer)
    pairs = [tokenize_preference(word_pair(w), tokenizer, None) for w in WORDS[:4]]
    metrics = DPO(0.1).evaluate(model, pairs, 2, tokenizer.pad_token_id, "cpu", "fp32")
    assert metrics["loss"] == pytest.approx(0.6931, abs=1e-4)
    assert metrics["reward_margin"] == 0.0 and metrics["reward_accuracy"] == 0.0


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="beta"):
        DPO(0.0)


def count_preferred(model, tokenizer, words: list[str]) -> int:
    answers = [
        generate(
            model, tokenizer, messages=[{"role": "user", "content": f"Name: {w}"}], max_new_tokens=4
        ).text
        for w in words
    ]
    return sum(answer.startswith(PREFERRED_WORD) for answer in answers)


class Recorder:
    def __init__(self) -> None:
        self.progress, self.evals, self.checkpoints = [], [], []

    def on_progress(self, progress) -> None:
        self.progress.append(progress)

    def on_eval(self, step, metrics) -> None:
        self.evals.append(metrics)

    def on_checkpoint(self, step, path, metrics) -> None:
        self.checkpoints.append(metrics)


def test_dpo_moves_at_least_16_of_20_held_out_answers_to_the_preferred_form(tokenizer, tmp_path: Path):
    """The issue's check, on the tiny model: 40 training pairs, 20 held-out prompts on unseen words."""
    model = adapted(tokenizer)
    held_out = [f"{word}9" for word in WORDS[10:30]]
    model.eval()
    assert count_preferred(model, tokenizer, held_out) == 0
    train_pairs = [
        tokenize_preference(word_pair(f"{w}{i}"), tokenizer, None) for w in WORDS[:20] for i in (0, 1)
    ]
    valid_pairs = [tokenize_preference(word_pair(w), tokenizer, None) for w in held_out[:4]]
    config = TrainingConfig(
        learning_rate=5e-3, batch_size=8, max_steps=30, n_epochs=10, warmup_steps=0, precision="fp32",
        seed=0, strategy="none", checkpoint_every=15, eval_every=15,
    )  # fmt: skip
    recorder = Recorder()
    result = train(
        model, tokenizer, train_pairs, config, valid_examples=valid_pairs, output_dir=tmp_path,
        callbacks=[recorder], objective=DPO(beta=0.1),
    )  # fmt: skip
    model.eval()
    moved = count_preferred(model, tokenizer, held_out)
    print(f"DPO moved {moved} of 20 held-out answers to the preferred form")
    assert moved >= 16
    assert result.adapter_dir is not None and result.train_loss < 0.6
    last = recorder.progress[-1].metrics
    assert last["reward_accuracy"] == 1.0 and last["reward_margin"] > 0
    assert {"reward_margin", "reward_accuracy", "eval_reward_margin"} <= recorder.checkpoints[-1].keys()
    assert recorder.evals[-1]["reward_accuracy"] == 1.0
    assert result.history[-1]["eval_reward_margin"] > 0
