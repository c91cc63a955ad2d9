"""#18's "auto": the rate by block size, the validation hold-out, early stopping and the best adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from diablo_core.data.holdout import split_holdout
from diablo_core.data.tokenization import IGNORE_INDEX, TokenizedExample
from diablo_core.spec import DiaBloHyperparameters, HyperparameterError, resolve_job_spec
from diablo_core.spec.auto import auto_learning_rate, holdout_size
from diablo_core.training.best import BEST_FILE, BestTracker
from diablo_core.training.loop import TrainingConfig
from tests.core.test_training import run, toy_examples


@pytest.mark.parametrize(
    ("hidden", "blocks", "rate"),
    [
        (4096, 64, 5e-4),  # LLaMA-2-7B: the paper's rate
        (576, 64, 1.974e-3),  # the default 135M model: the README's hand-tuned 2e-3
        (64, 8, 2.144e-3),  # the tiny test model at N=8
        (2048, 64, 8.12e-4),  # TinyLlama-1.1B's shape
        (64, 64, 9.19e-3),  # one input per block: just under the cap
        (64, 4096, 9.19e-3),  # more blocks than inputs: blocks of one input, as the layer builds them
    ],
)
def test_learning_rate_rule_by_block_size(hidden: int, blocks: int, rate: float) -> None:
    assert auto_learning_rate(hidden, blocks) == pytest.approx(rate, rel=1e-3)


def test_learning_rate_rule_is_bounded_and_refuses_nonsense() -> None:
    assert auto_learning_rate(1 << 20, 1) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="positive"):
        auto_learning_rate(0, 64)


@pytest.mark.parametrize(("examples", "held"), [(20, 0), (40, 10), (100, 16), (1_000, 50), (50_000, 100)])
def test_holdout_size(examples: int, held: int) -> None:
    assert holdout_size(examples) == held


def test_holdout_is_excluded_from_training_and_repeatable() -> None:
    examples = list(range(200))
    split = split_holdout(examples, 16, seed=3)
    assert len(split.valid) == 16 and len(split.train) == 184
    assert not set(split.valid) & set(split.train) and sorted(split.valid + split.train) == examples
    assert split == split_holdout(examples, 16, seed=3)
    assert split.valid != split_holdout(examples, 16, seed=4).valid
    with pytest.raises(ValueError, match="hold out"):
        split_holdout(examples[:4], 4, seed=0)


def test_multiplier_scales_the_models_rate_and_a_given_rate_stays() -> None:
    scaled = resolve_job_spec(None, DiaBloHyperparameters(learning_rate_multiplier=0.5), num_examples=10)
    assert scaled.for_model(576).learning_rate == pytest.approx(0.5 * 1.974e-3, rel=1e-3)
    given = resolve_job_spec(None, DiaBloHyperparameters(learning_rate=1e-3), num_examples=10)
    fitted = given.for_model(4096)
    assert (fitted.learning_rate, fitted.learning_rate_multiplier) == (1e-3, pytest.approx(2.0))


def test_user_epochs_keep_their_meaning() -> None:
    spec = resolve_job_spec(None, DiaBloHyperparameters(n_epochs=3), num_examples=1_000)
    assert (spec.n_epochs, spec.early_stopping_patience, spec.validation_holdout, spec.eval_every) == (
        3,
        None,
        0,
        None,
    )
    assert spec.total_steps(1_000) == 189


def test_early_stopping_with_a_validation_file_holds_nothing_out() -> None:
    spec = resolve_job_spec(None, None, num_examples=1_000, has_validation_file=True)
    assert (spec.validation_holdout, spec.early_stopping_patience, spec.n_epochs) == (0, 4, 6)


def test_asked_early_stopping_on_a_tiny_file_without_validation_is_refused() -> None:
    asked = DiaBloHyperparameters(n_epochs=2, early_stopping_patience=3)
    with pytest.raises(HyperparameterError) as error:
        resolve_job_spec(None, asked, num_examples=12)
    assert error.value.param == "method.diablo.hyperparameters.early_stopping_patience"
    # "auto" on such a file quietly trains on every example, as before.
    assert resolve_job_spec(None, None, num_examples=12).early_stopping_patience is None


def test_the_bound_stays_within_the_step_limit() -> None:
    spec = resolve_job_spec(None, None, num_examples=1_000, max_steps_limit=250)
    assert spec.n_epochs == 4 and spec.total_steps(950) == 240


def test_tracker_counts_evaluations_since_the_best_and_rebuilds_from_history() -> None:
    tracker = BestTracker(patience=2)
    assert [tracker.observe(s, loss) for s, loss in [(2, 1.0), (4, 0.5), (6, 0.6), (8, 0.5)]] == [
        True,
        True,
        False,
        False,
    ]
    assert tracker.exhausted and (tracker.best_step, tracker.best_loss) == (4, 0.5)
    history = [{"step": 1, "loss": 9.0}, {"step": 2, "eval_loss": 1.0}, {"step": 4, "eval_loss": 0.5}]
    again = BestTracker.from_history(2, history)
    assert (again.best_step, again.since_best, again.exhausted) == (4, 0, False)


def conflicting(examples: list[TokenizedExample]) -> list[TokenizedExample]:
    """The same prompts with other answers: the better the model learns the task, the worse it does here."""
    out = []
    for example in examples:
        answer_at = [i for i, label in enumerate(example.labels) if label != IGNORE_INDEX]
        ids = list(example.input_ids)
        for i in answer_at:
            ids[i] = 20
        labels = [IGNORE_INDEX if label == IGNORE_INDEX else ids[i] for i, label in enumerate(example.labels)]
        out.append(TokenizedExample(ids, labels))
    return out


def test_early_stopping_stops_when_validation_loss_stops_improving(tmp_path: Path) -> None:
    config = TrainingConfig(
        learning_rate=1e-2, max_steps=16, batch_size=4, warmup_steps=0, eval_every=2, checkpoint_every=2
    )
    patient = TrainingConfig(**{**config.to_dict(), "early_stopping_patience": 2})
    valid = conflicting(toy_examples(8))
    _, result = run(tmp_path, "stop", patient, valid_examples=valid)
    evals = [r["eval_loss"] for r in result.history if "eval_loss" in r]
    assert result.early_stopped and not result.stopped
    assert result.steps == result.best_step + 2 * 2 < 16 and len(evals) == result.steps // 2
    assert result.best_eval_loss == min(evals)
    best = result.best_adapter_dir
    assert json.loads((best / BEST_FILE).read_text())["step"] == result.best_step
    at_best = tmp_path / "stop" / "checkpoints" / f"step-{result.best_step}" / "adapter_model.safetensors"
    best_blocks, checkpoint_blocks = load_file(best / "adapter_model.safetensors"), load_file(at_best)
    assert all(best_blocks[k].equal(checkpoint_blocks[k]) for k in checkpoint_blocks)
    final = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert any(not best_blocks[k].equal(final[k]) for k in final)
    # Without a patience the same run takes every step and keeps no best adapter.
    _, full = run(tmp_path, "full", config, valid_examples=valid)
    assert (full.steps, full.early_stopped, full.best_adapter_dir) == (16, False, None)


def test_a_run_that_keeps_improving_takes_every_step(tmp_path: Path) -> None:
    config = TrainingConfig(
        learning_rate=1e-2,
        max_steps=12,
        batch_size=4,
        warmup_steps=0,
        eval_every=3,
        early_stopping_patience=2,
    )
    _, result = run(tmp_path, "improve", config, valid_examples=toy_examples(10))
    assert (result.steps, result.early_stopped) == (12, False)
    assert result.best_step == 12 and result.best_adapter_dir is not None
