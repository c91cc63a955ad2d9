"""A LoRA job's spec: the shared OpenAI/"auto" rules, rank and alpha, stored and read back as "lora"."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.spec import (
    LoRAHyperparameters,
    OpenAIHyperparameters,
    ResolvedJobSpec,
    ResolvedLoRASpec,
    resolve_job_spec,
)
from diablo_core.spec.job import LORA_BASE_LEARNING_RATE


def test_lora_resolves_by_the_shared_rules_and_round_trips() -> None:
    top = OpenAIHyperparameters(n_epochs=2)
    spec = resolve_job_spec(
        top, LoRAHyperparameters(rank=16, alpha=32, batch_size=64), num_examples=10, method_type="lora"
    )
    assert isinstance(spec, ResolvedLoRASpec)
    assert (spec.n_epochs, spec.batch_size, spec.rank, spec.alpha) == (
        2,
        10,
        16,
        32.0,
    )  # batch capped to data
    assert spec.learning_rate == "auto"  # until the model is known; LoRA's rate does not depend on it
    spec = spec.for_model(hidden_size=576)
    assert spec.learning_rate == LORA_BASE_LEARNING_RATE
    stored = spec.to_dict()
    assert stored["type"] == "lora" and "num_blocks" not in stored["lora"]["hyperparameters"]
    assert ResolvedJobSpec.from_dict(stored) == spec
    training, adapter = spec.fit_max_length(100, 2048).configs(seed=3, device="cpu")
    assert adapter == LoRAConfig(rank=16, alpha=32.0, dropout=0.05)
    assert training.learning_rate == LORA_BASE_LEARNING_RATE and training.seed == 3


def test_lora_defaults_and_auto_epochs() -> None:
    spec = resolve_job_spec(None, None, num_examples=20, method_type="lora")
    assert (spec.rank, spec.alpha, spec.n_epochs) == (LoRAConfig.rank, LoRAConfig.alpha, 5)
    doubled = resolve_job_spec(
        None, LoRAHyperparameters(learning_rate_multiplier=2), num_examples=20, method_type="lora"
    )
    assert doubled.for_model(hidden_size=576).learning_rate == pytest.approx(2 * LORA_BASE_LEARNING_RATE)


@pytest.mark.parametrize(
    "bad", [{"num_blocks": 64}, {"rank": 0}, {"alpha": 0}, {"rank": 1.5}, {"target_modules": ["a.b"]}]
)
def test_bad_lora_hyperparameters_name_the_field(bad: dict) -> None:
    with pytest.raises(ValidationError) as caught:
        LoRAHyperparameters.model_validate(bad)
    assert caught.value.errors()[0]["loc"] == (next(iter(bad)),)


def test_a_diablo_spec_still_reads_back_as_diablo() -> None:
    spec = resolve_job_spec(None, None, num_examples=20)
    assert type(ResolvedJobSpec.from_dict(spec.to_dict())) is ResolvedJobSpec
