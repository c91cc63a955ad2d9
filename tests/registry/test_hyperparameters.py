"""Hyperparameter resolution (shared by the API and the worker) and the torch-free base-model list."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from registry.base_models import DEFAULT_MODEL_ID, canonical_model_id, find_base_model, load_source
from registry.hyperparameters import (
    DiaBloHyperparameters,
    HyperparameterError,
    OpenAIHyperparameters,
    auto_epochs,
    load_resolved,
    resolve_hyperparameters,
)
from registry.settings import Settings


@pytest.mark.parametrize(
    ("examples", "epochs"), [(1, 25), (10, 10), (34, 3), (5_000, 3), (10_000, 2), (30_000, 1)]
)
def test_auto_epochs_aim_at_100_to_25000_examples(examples: int, epochs: int) -> None:
    assert auto_epochs(examples) == epochs


def test_defaults_resolve_to_the_paper_settings() -> None:
    resolved = resolve_hyperparameters(None, None, num_examples=1_000, checkpoint_every=25)
    assert resolved.openai_view() == {"n_epochs": 3, "batch_size": 16, "learning_rate_multiplier": 1.0}
    assert (resolved.learning_rate, resolved.num_blocks, resolved.dropout) == (5e-4, 64, 0.05)
    assert resolved.target_modules == ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
    # 3 x 63 steps is longer than the 100-step warm-up, so it is kept.
    assert (resolved.warmup_steps, resolved.checkpoint_every) == (100, 25)
    assert resolved.total_steps(1_000) == 189


def test_method_values_win_and_warmup_shrinks_for_short_runs() -> None:
    top = OpenAIHyperparameters(n_epochs=5, batch_size=8)
    method = DiaBloHyperparameters(n_epochs=2, num_blocks=32, max_steps=50, learning_rate_multiplier=3)
    resolved = resolve_hyperparameters(top, method, num_examples=100)
    assert resolved.openai_view() == {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 3.0}
    assert resolved.learning_rate == pytest.approx(1.5e-3)
    assert (resolved.total_steps(100), resolved.warmup_steps) == (50, 5)


def test_conflicts_name_the_field() -> None:
    both = DiaBloHyperparameters(learning_rate=1e-3, learning_rate_multiplier=2)
    with pytest.raises(HyperparameterError) as conflict:
        resolve_hyperparameters(None, both, num_examples=10)
    assert conflict.value.param == "method.diablo.hyperparameters.learning_rate"
    micro = DiaBloHyperparameters(micro_batch_size=8)
    with pytest.raises(HyperparameterError) as too_big:
        resolve_hyperparameters(None, micro, num_examples=4, method_type="diablo")
    assert too_big.value.param == "method.diablo.hyperparameters.micro_batch_size"


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_epochs", 0), ("n_epochs", True), ("n_epochs", "3"), ("batch_size", 257), ("num_blocks", 1.5)],
)
def test_bad_values_fail_on_their_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        DiaBloHyperparameters.model_validate({field: value})
    assert [e["loc"] for e in error.value.errors()] == [(field,)]


def test_stored_values_build_the_core_configs() -> None:
    from diablo_core.methods.diablo.config import DiaBloConfig
    from diablo_core.training.loop import TrainingConfig

    method = DiaBloHyperparameters(layers=[3, 1], target_modules=["q_proj"], eval_every=5)
    resolved = resolve_hyperparameters(None, method, num_examples=64, checkpoint_every=0)
    again = load_resolved(resolved.method_view())
    assert again == resolved
    training = TrainingConfig(**again.training_config_kwargs(), seed=1)
    diablo = DiaBloConfig(**again.diablo_config_kwargs())
    assert (training.checkpoint_every, training.eval_every, training.batch_size) == (None, 5, 16)
    assert (diablo.layers, diablo.target_modules) == ((1, 3), ("q_proj",))


def test_base_models_without_weights(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert canonical_model_id("default", settings) == DEFAULT_MODEL_ID
    assert load_source(DEFAULT_MODEL_ID, settings) == "default"
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "mine" / "config.json").write_text("{}")
    assert load_source("mine", settings) == str(tmp_path / "models" / "mine")
    assert find_base_model("nope", settings) is None
    with pytest.raises(LookupError):
        load_source("nope", settings)
    custom = Settings(data_dir=tmp_path, default_model="mine")
    assert canonical_model_id("default", custom) == "mine"
