"""The job spec (diablo_core.spec): its rules, resolution, stored form, and the configs it rebuilds."""

from __future__ import annotations

from dataclasses import fields
from typing import get_args

import pytest
from pydantic import ValidationError

from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.models.quantization_names import QUANTIZATIONS, Quantization
from diablo_core.precision.names import PRECISIONS
from diablo_core.spec import (
    DiaBloHyperparameters,
    HyperparameterError,
    OpenAIHyperparameters,
    ResolvedJobSpec,
    TrainingConfig,
    auto_epochs,
    resolve_job_spec,
)
from diablo_core.spec.auto import PAPER_WARMUP_STEPS
from diablo_core.spec.job import DIABLO_FIELDS, MODEL_FIELDS, REPORTED_ONLY, TRAINING_FIELDS
from diablo_core.spec.training import SCHEDULERS
from tests.fresh_imports import heavy_modules_loaded


@pytest.mark.parametrize(
    ("examples", "epochs"), [(1, 25), (10, 10), (34, 3), (5_000, 3), (10_000, 2), (30_000, 1)]
)
def test_auto_epochs_aim_at_100_to_25000_examples(examples: int, epochs: int) -> None:
    assert auto_epochs(examples) == epochs


def test_defaults_resolve_to_the_paper_settings_with_early_stopping() -> None:
    resolved = resolve_job_spec(None, None, num_examples=1_000, checkpoint_every=25)
    # 50 examples held out; up to twice the rule's 3 epochs, stopping after 4 evaluations without progress.
    assert resolved.openai_view() == {"n_epochs": 6, "batch_size": 16, "learning_rate_multiplier": 1.0}
    assert (resolved.validation_holdout, resolved.early_stopping_patience) == (50, 4)
    assert (resolved.learning_rate, resolved.num_blocks, resolved.dropout) == ("auto", 64, 0.05)
    assert resolved.target_modules == ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
    # "auto" warm-up: a tenth of the 6 x 60-step bound; the rule's 180 steps: 10 evaluations.
    assert (resolved.warmup_steps, resolved.checkpoint_every, resolved.eval_every) == (36, 25, 18)
    assert resolved.total_steps(950) == 360


def test_method_values_win_and_warmup_shrinks_for_short_runs() -> None:
    top = OpenAIHyperparameters(n_epochs=5, batch_size=8)
    method = DiaBloHyperparameters(n_epochs=2, num_blocks=32, max_steps=50, learning_rate_multiplier=3)
    resolved = resolve_job_spec(top, method, num_examples=100)
    # max_steps decides the epochs: 50 steps of 13 per epoch start 4 of them (3.85 run).
    assert resolved.openai_view() == {"n_epochs": 4, "batch_size": 8, "learning_rate_multiplier": 3.0}
    assert resolved.learning_rate == "auto"
    assert resolved.for_model(hidden_size=2048).learning_rate == pytest.approx(1.5e-3)  # 2048 / 32 = 64
    assert resolved.early_stopping_patience is None and resolved.validation_holdout == 0
    assert (resolved.total_steps(100), resolved.warmup_steps) == (50, 5)


@pytest.mark.parametrize(
    ("given", "total", "used"),
    [
        ("auto", 5_000, 100),
        ("auto", 300, 30),
        ("auto", 144, 14),
        ("auto", 9, 0),
        (100, 300, 100),
        (100, 50, 5),
    ],
)
def test_warmup_auto_is_a_tenth_of_the_run_at_most_100(given: int | str, total: int, used: int) -> None:
    method = DiaBloHyperparameters(max_steps=total, warmup_steps=given)
    assert resolve_job_spec(None, method, num_examples=64).warmup_steps == used


def test_warmup_refuses_what_is_not_auto_or_a_count() -> None:
    for bad in (-1, 2.5, "soon", True):
        with pytest.raises(ValueError, match="warmup_steps"):
            DiaBloHyperparameters(warmup_steps=bad)


@pytest.mark.parametrize(("max_steps", "n_epochs"), [(24, 3), (20, 2), (1, 1), (100, 10)])
def test_n_epochs_echoes_the_epochs_max_steps_runs(max_steps: int, n_epochs: int) -> None:
    # 40 examples in batches of 4: 10 steps per epoch; 24 steps run 2.4 epochs, reported as 3.
    method = DiaBloHyperparameters(n_epochs=7, batch_size=4, max_steps=max_steps)
    resolved = resolve_job_spec(None, method, num_examples=40)
    assert (resolved.n_epochs, resolved.total_steps(40)) == (n_epochs, max_steps)


def test_conflicts_name_the_field() -> None:
    both = DiaBloHyperparameters(learning_rate=1e-3, learning_rate_multiplier=2)
    with pytest.raises(HyperparameterError) as conflict:
        resolve_job_spec(None, both, num_examples=10)
    assert conflict.value.param == "method.diablo.hyperparameters.learning_rate"
    micro = DiaBloHyperparameters(micro_batch_size=8)
    with pytest.raises(HyperparameterError) as too_big:
        resolve_job_spec(None, micro, num_examples=4, method_type="diablo")
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
    method = DiaBloHyperparameters(layers=[3, 1], target_modules=["q_proj"], eval_every=5)
    resolved = resolve_job_spec(None, method, num_examples=80, checkpoint_every=0)
    again = ResolvedJobSpec.from_dict(resolved.to_dict())
    assert again == resolved
    with pytest.raises(ValueError, match="for_model"):
        again.configs(seed=1, device="cpu")
    with pytest.raises(ValueError, match="fit_max_length"):
        again.for_model(576).configs(seed=1, device="cpu")
    training, diablo = again.for_model(576).fit_max_length(300, 8192).configs(seed=1, device="cpu")
    assert (training.checkpoint_every, training.eval_every, training.batch_size) == (None, 5, 16)
    assert training.max_length == 300
    assert (training.early_stopping_patience, training.learning_rate) == (
        4,
        pytest.approx(1.974e-3, rel=1e-3),
    )
    assert (diablo.layers, diablo.target_modules) == ((1, 3), ("q_proj",))


def test_the_stored_form_of_existing_jobs_still_reads() -> None:
    """A row written before the spec moved (by registry.hyperparameters) rebuilds its configs."""
    stored = {"type": "diablo", "diablo": {"hyperparameters": {
        "n_epochs": 3, "batch_size": 16, "learning_rate_multiplier": 1.0, "learning_rate": 0.0005,
        "num_blocks": 64, "target_modules": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
        "layers": None, "dropout": 0.05, "warmup_steps": 100, "max_steps": None, "max_length": 256,
        "scheduler": "linear", "micro_batch_size": None, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "gradient_checkpointing": False, "keep_checkpoints": None, "checkpoint_every": 50, "eval_every": None,
    }}}  # fmt: skip
    spec = ResolvedJobSpec.from_dict(stored)
    # Settings added since read as their defaults.
    added = {
        "precision": "auto",
        "quantization": None,
        "strategy": "auto",
        "early_stopping_patience": None,
        "validation_holdout": 0,
    }
    assert spec.to_dict()["diablo"]["hyperparameters"] == stored["diablo"]["hyperparameters"] | added
    training, diablo = spec.configs(seed=7, device="cpu", checkpoint_each_epoch=True)
    assert training == TrainingConfig(n_epochs=3, checkpoint_every=50, seed=7, checkpoint_each_epoch=True)
    assert diablo == DiaBloConfig()
    with pytest.raises(KeyError):
        ResolvedJobSpec.from_dict({"type": "diablo"})


def test_every_setting_reaches_a_config_and_defaults_are_the_configs_own() -> None:
    """A new request field must be named like the TrainingConfig or DiaBloConfig field it sets."""
    settings = set(DiaBloHyperparameters.model_fields)
    assert settings - TRAINING_FIELDS - DIABLO_FIELDS == REPORTED_ONLY | MODEL_FIELDS
    assert not TRAINING_FIELDS & DIABLO_FIELDS
    request = DiaBloHyperparameters()
    training, diablo = TrainingConfig(), DiaBloConfig()
    for field in fields(DiaBloConfig):
        if field.name not in ("target_modules", "layers"):
            assert getattr(request, field.name) == getattr(diablo, field.name), field.name
    for name in ("scheduler", "weight_decay", "max_grad_norm"):
        assert getattr(request, name) == getattr(training, name), name
    assert request.warmup_steps == "auto" and training.warmup_steps == PAPER_WARMUP_STEPS  # its cap
    assert request.max_length == "auto"  # the files' longest example (spec.auto), not a fixed default
    assert get_args(DiaBloHyperparameters.model_fields["scheduler"].annotation) == SCHEDULERS


def test_every_given_setting_is_passed_on_to_the_configs() -> None:
    given = {
        "n_epochs": 4, "batch_size": 8, "num_blocks": 16, "target_modules": ["v_proj"], "layers": [2],
        "dropout": 0.1, "learning_rate": 1e-3, "warmup_steps": 3, "max_steps": 40, "max_length": 64,
        "scheduler": "cosine", "micro_batch_size": 2, "weight_decay": 0.01, "max_grad_norm": None,
        "gradient_checkpointing": True, "keep_checkpoints": 2, "checkpoint_every": 7, "eval_every": 5,
        "precision": "bf16",
    }  # fmt: skip
    spec = resolve_job_spec(None, DiaBloHyperparameters(**given), num_examples=100)
    training, diablo = spec.configs(seed=1, device="cpu")
    for name, value in given.items():
        config = diablo if name in DIABLO_FIELDS else training
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(config, name) == expected, name


def test_the_spec_imports_neither_torch_nor_transformers() -> None:
    assert heavy_modules_loaded(["diablo_core.spec", "diablo_core.spec.job"]) == []


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_is_stored_as_given_and_reaches_the_training_config(precision: str) -> None:
    method = DiaBloHyperparameters(precision=precision)
    spec = resolve_job_spec(None, method, num_examples=8)
    assert ResolvedJobSpec.from_dict(spec.to_dict()).precision == precision
    device = "cuda" if precision == "fp16" else "cpu"  # the config refuses fp16 elsewhere
    assert (
        spec.for_model(576).fit_max_length(64, None).configs(seed=0, device=device)[0].precision == precision
    )


@pytest.mark.parametrize(
    ("field", "value"), [("precision", "fp8"), ("precision", None), ("quantization", "q4")]
)
def test_unknown_precision_or_quantization_fails_on_its_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as error:
        DiaBloHyperparameters.model_validate({field: value})
    assert [e["loc"] for e in error.value.errors()] == [(field,)]


def test_quantization_names_are_one_list() -> None:
    assert get_args(Quantization) == QUANTIZATIONS
    assert DiaBloHyperparameters(quantization="nf4").quantization == "nf4"
    assert DiaBloHyperparameters().quantization is None


def test_max_length_auto_is_the_longest_example_within_the_context() -> None:
    spec = resolve_job_spec(None, None, num_examples=40)
    assert spec.max_length == "auto"
    assert spec.length_limit(2048) == 2048  # "auto": an example may fill the model's context
    assert spec.length_limit(None) is None
    assert spec.fit_max_length(300, 2048).max_length == 300
    assert spec.fit_max_length(300, None).max_length == 300
    stored = ResolvedJobSpec.from_dict(spec.fit_max_length(300, 2048).to_dict())
    assert stored.max_length == 300


def test_an_explicit_max_length_is_the_limit_as_given() -> None:
    spec = resolve_job_spec(None, DiaBloHyperparameters(max_length=64), num_examples=40)
    assert spec.length_limit(2048) == 64
    assert spec.fit_max_length(300, 2048).max_length == 64
    beyond = resolve_job_spec(None, DiaBloHyperparameters(max_length=4096), num_examples=40)
    assert (beyond.length_limit(2048), beyond.length_limit(None)) == (2048, 4096)  # the context still bounds


@pytest.mark.parametrize("value", [7, 131_073, "256", 12.5, True])
def test_max_length_takes_auto_or_an_integer_in_bounds(value: object) -> None:
    with pytest.raises(ValidationError) as error:
        DiaBloHyperparameters.model_validate({"max_length": value})
    assert [e["loc"] for e in error.value.errors()] == [("max_length",)]
