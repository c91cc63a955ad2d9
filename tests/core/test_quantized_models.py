"""Quantized bases end to end on tiny models: loading, adapter files and their checks, training, serving."""

import json

import pytest
import torch

from diablo_core.data.tokenization import tokenize_example
from diablo_core.errors import AdapterError, ConfigError
from diablo_core.methods.diablo.adapter_io import CONFIG_FILE, load_adapter, save_adapter
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.models.identity import compute_content_hash
from diablo_core.models.loading import load_base_model
from diablo_core.models.quantization import model_quantization, quantization_of, quantize_model, stored_bytes
from diablo_core.serving import AdapterCache, AdapterRef, MultiAdapterModel
from diablo_core.serving.multi_adapter import merge_blocks
from diablo_core.training.loop import TrainingConfig, train
from diablo_core.training.loss import evaluate_examples
from tests.core.serving.conftest import sha256_of
from tests.core.test_training import PAD, PadOnly, toy_examples
from tests.core.tiny import randomize_blocks, token_batch
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Llama checkpoint directory with a tokenizer, and the content hash of its weights."""
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(len(tokenizer))
    directory = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, compute_content_hash(model)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits  # (B, T, V)


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_load_base_model_quantizes_the_linears_and_keeps_the_checkpoint_hash(checkpoint, quantization):
    directory, content_hash = checkpoint
    loaded = load_base_model(str(directory), quantization=quantization)
    model = loaded.model
    assert loaded.identity.content_hash == content_hash and loaded.identity.quantization == quantization
    assert model_quantization(model) == quantization and not model.training
    assert quantization_of(model.model.layers[0].self_attn.q_proj) == quantization
    assert quantization_of(model.lm_head) is None and model.model.embed_tokens.weight.dtype == torch.float32
    plain = load_base_model(str(directory)).model
    drift = (_logits(model, token_batch()) - _logits(plain, token_batch())).abs().max()
    assert 0 < drift < 0.5


def test_load_base_model_compute_dtype_follows_the_dtype(checkpoint):
    model = load_base_model(str(checkpoint[0]), quantization="nf4", dtype=torch.bfloat16).model
    q_proj = model.model.layers[0].self_attn.q_proj
    assert q_proj.compute_dtype == torch.bfloat16 and model.model.norm.weight.dtype == torch.bfloat16
    assert _logits(model, token_batch()).dtype == torch.bfloat16


def test_load_base_model_refuses_an_unknown_quantization(checkpoint):
    with pytest.raises(ValueError, match="quantization must be one of"):
        load_base_model(str(checkpoint[0]), quantization="q4_k")


def test_adapter_records_the_quantization_and_load_refuses_another(checkpoint, tmp_path):
    directory, _ = checkpoint
    trained = load_base_model(str(directory), quantization="nf4").model
    apply_diablo(trained, DiaBloConfig(num_blocks=4))
    randomize_blocks(trained)
    save_adapter(trained, tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["base_model"]["quantization"] == "nf4"

    again = load_base_model(str(directory), quantization="nf4").model
    load_adapter(again, tmp_path)
    ids = token_batch()
    torch.testing.assert_close(_logits(again, ids), _logits(trained, ids))
    for other in (None, "int8"):
        with pytest.raises(AdapterError) as refused:
            load_adapter(load_base_model(str(directory), quantization=other).model, tmp_path)
        assert refused.value.code == "adapter_quantization_mismatch"
        assert "allow_quantization_mismatch=True" in refused.value.message

    full = load_base_model(str(directory)).model
    load_adapter(full, tmp_path, allow_quantization_mismatch=True)  # the explicit choice QLoRA users make
    drift = (_logits(full, ids) - _logits(trained, ids)).abs().max()
    assert 0 < drift < 0.5


def test_full_precision_adapter_records_null_and_is_refused_on_nf4(checkpoint, tmp_path):
    directory, _ = checkpoint
    model = load_base_model(str(directory)).model
    apply_diablo(model, DiaBloConfig(num_blocks=4))
    save_adapter(model, tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["base_model"]["quantization"] is None
    with pytest.raises(AdapterError, match="full-precision base") as refused:
        load_adapter(load_base_model(str(directory), quantization="nf4").model, tmp_path)
    assert refused.value.code == "adapter_quantization_mismatch"


def test_diablo_trains_on_an_nf4_base(tmp_path):
    model = make_tiny_model(256, seed=0)
    quantize_model(model, "nf4", torch.float32, "cpu")
    apply_diablo(model, DiaBloConfig(num_blocks=8, dropout=0.05))
    data, valid = toy_examples(32), toy_examples(8, seed=1)
    before = evaluate_examples(model, valid, 8, PAD)["loss"]
    config = TrainingConfig(learning_rate=1e-2, max_steps=30, batch_size=8, warmup_steps=0)
    result = train(model, PadOnly(), data, config, valid_examples=valid, output_dir=tmp_path)
    assert result.eval_metrics["loss"] < before - 0.4
    recorded = json.loads((tmp_path / "adapter" / CONFIG_FILE).read_text())["base_model"]
    assert recorded["quantization"] == "nf4"


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_mixed_batch_over_a_quantized_base_equals_each_row_alone(checkpoint, tmp_path, quantization):
    directory, _ = checkpoint
    loaded = load_base_model(str(directory), quantization=quantization)
    refs = []
    for seed, config in enumerate([DiaBloConfig(num_blocks=4), DiaBloConfig(num_blocks=8, layers=(1,))]):
        adapted = load_base_model(str(directory), quantization=quantization).model
        apply_diablo(adapted, config)
        randomize_blocks(adapted, seed=seed, scale=0.3)
        save_adapter(adapted, tmp_path / str(seed))
        refs.append(tmp_path / str(seed))
    adapters = MultiAdapterModel(loaded.model)
    cache = AdapterCache(adapters, loaded.identity, max_adapters=2)
    slots = [cache.load(AdapterRef(sha256_of(ref), ref)) for ref in refs]
    ids = torch.cat([token_batch(1, 9, seed=seed) for seed in range(3)])  # (3, 9)
    row_slots = [0, slots[0], slots[1]]
    with adapters.route(row_slots):
        mixed = _logits(loaded.model, ids)  # (3, 9, V)
    for row, slot in enumerate(row_slots):
        with adapters.route([slot]):
            alone = _logits(loaded.model, ids[row : row + 1])[0]
        torch.testing.assert_close(mixed[row], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(mixed[1], mixed[0], atol=1e-3)
    single = load_base_model(str(directory), quantization=quantization).model
    with pytest.raises(ConfigError) as refused:
        merge_blocks(single, {"model.layers.0.self_attn.q_proj": torch.zeros(4, 16, 16)})
    assert refused.value.code == "merge_into_quantized_base"


@pytest.mark.slow
def test_default_model_in_nf4_takes_at_most_035_of_fp32_and_trains(tmp_path):
    full = load_base_model("default", data_dir=tmp_path)
    fp32_bytes = stored_bytes(full.model)
    del full
    loaded = load_base_model("default", data_dir=tmp_path, quantization="nf4")
    assert stored_bytes(loaded.model) <= 0.35 * fp32_bytes
    apply_diablo(loaded.model, DiaBloConfig(num_blocks=64))
    messages = [{"role": "user", "content": "12 + 30?"}, {"role": "assistant", "content": "42"}]
    examples = [tokenize_example({"messages": messages}, loaded.tokenizer)] * 4
    config = TrainingConfig(learning_rate=2e-3, max_steps=6, batch_size=4, warmup_steps=0)
    output = tmp_path / "run"
    result = train(loaded.model, loaded.tokenizer, examples, config, output_dir=output)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    recorded = json.loads((output / "adapter" / CONFIG_FILE).read_text())["base_model"]
    assert recorded["quantization"] == "nf4" and recorded["content_hash"] == loaded.identity.content_hash
