"""LoRA through PEFT: applied in place, trained by the same loop, saved in PEFT's format, resumed exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from diablo_core.errors import AdapterError, ConfigError
from diablo_core.methods.adapters import LORA, method_of, read_any_adapter_config
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, trainable_parameters
from diablo_core.methods.lora.adapter_io import load_lora_adapter
from diablo_core.methods.lora.config import IDENTITY_FILE, LoRAConfig
from diablo_core.methods.lora.model import apply_lora, lora_state_dict
from diablo_core.models.identity import compute_content_hash
from diablo_core.training.loop import TrainingConfig, train
from tests.core.test_training import PadOnly, toy_examples
from tests.core.tiny import tiny_llama
from tests.core.tiny_tokenizer import make_tiny_model


def lora_model(rank: int = 4, seed: int = 0, **config: object):
    model = make_tiny_model(256, seed=seed)
    apply_lora(model, LoRAConfig(rank=rank, alpha=2.0 * rank, dropout=0.0, **config))
    return model


def fp32_config(**overrides: object) -> TrainingConfig:
    values = {"learning_rate": 1e-2, "max_steps": 6, "batch_size": 4, "warmup_steps": 0, "precision": "fp32"}
    return TrainingConfig(**{**values, **overrides})


def test_lora_starts_at_the_base_and_records_the_plain_weights() -> None:
    plain = make_tiny_model(256, seed=0)
    ids = torch.arange(10, 30).unsqueeze(0)
    expected = plain(input_ids=ids).logits
    model = lora_model()
    assert method_of(model) is LORA
    assert torch.equal(model(input_ids=ids).logits, expected)  # B is zero-initialised
    assert model.diablo_base_identity.content_hash == compute_content_hash(plain)


def test_only_lora_matrices_train_and_peft_loads_the_saved_adapter_unchanged(tmp_path: Path) -> None:
    model = lora_model()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}
    before = {k: v.clone() for k, v in lora_state_dict(model).items()}
    result = train(model, PadOnly(), toy_examples(16), fp32_config(), output_dir=tmp_path)
    after = lora_state_dict(model)
    assert all(torch.equal(frozen[k], v) for k, v in model.state_dict().items() if k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # B moved off zero
    adapter = result.adapter_dir
    assert adapter is not None
    assert {"adapter_config.json", "adapter_model.safetensors", IDENTITY_FILE} <= {
        p.name for p in adapter.iterdir()
    }
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    ids = torch.arange(10, 30).unsqueeze(0)
    ours = model.eval()(input_ids=ids).logits
    reloaded = PeftModel.from_pretrained(make_tiny_model(256, seed=0), str(adapter)).eval()
    assert torch.equal(reloaded(input_ids=ids).logits, ours)
    again = make_tiny_model(256, seed=0)
    load_lora_adapter(again, adapter)
    assert torch.equal(again(input_ids=ids).logits, ours)
    assert read_any_adapter_config(adapter)["rank"] == 4


def test_resume_from_a_lora_checkpoint_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = lora_model()
    train(whole, PadOnly(), toy_examples(16), fp32_config(), output_dir=tmp_path / "whole")
    first = lora_model()
    half = train(
        first,
        PadOnly(),
        toy_examples(16),
        fp32_config(checkpoint_every=3, max_steps=6),
        output_dir=tmp_path / "a",
    )
    checkpoint = tmp_path / "a" / "checkpoints" / "step-3"
    assert half.steps == 6 and checkpoint.is_dir()
    resumed = lora_model()
    train(
        resumed, PadOnly(), toy_examples(16), fp32_config(), output_dir=tmp_path / "b", resume_from=checkpoint
    )
    for key, value in lora_state_dict(whole).items():
        assert torch.equal(lora_state_dict(resumed)[key], value), key


def test_lora_adapter_for_another_base_is_refused(tmp_path: Path) -> None:
    model = lora_model()
    train(model, PadOnly(), toy_examples(8), fp32_config(max_steps=1), output_dir=tmp_path)
    with pytest.raises(AdapterError) as caught:
        load_lora_adapter(make_tiny_model(256, seed=5), tmp_path / "adapter")
    assert caught.value.code == "adapter_base_mismatch"


def test_no_matching_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_lora(make_tiny_model(256), LoRAConfig(target_modules=("nope_proj",)))
    assert caught.value.code == "no_target_modules"


def test_default_lora_matches_diablo_n64_in_size_on_a_default_shaped_model() -> None:
    """r=5 on q,k,v,up,down vs DiaBlo N=64 on SmolLM2-135M's shapes, 30 layers (docs/lora.md)."""
    shapes = {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
    }
    lora, diablo = tiny_llama(num_hidden_layers=1, **shapes), tiny_llama(num_hidden_layers=1, **shapes)
    apply_lora(lora, LoRAConfig())
    apply_diablo(diablo, DiaBloConfig())
    assert trainable_parameters(lora) * 30 == 1_036_800
    assert trainable_parameters(diablo) * 30 == 1_088_640
