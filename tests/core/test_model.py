"""apply_diablo and friends on tiny Llama models: matching, freezing, merging, adapter state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diablo_core.errors import AdapterError, ConfigError
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.layer import DiaBloLinear
from diablo_core.methods.diablo.model import (
    adapter_state_dict,
    apply_diablo,
    diablo_modules,
    get_diablo_config,
    layer_index,
    load_adapter_state_dict,
    merge_diablo,
    trainable_parameters,
    unload_diablo,
    unmerge_diablo,
)
from tests.core.tiny import randomize_blocks, tiny_llama, token_batch

CONFIG = DiaBloConfig(num_blocks=8)
TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.up_proj", "mlp.down_proj")


def test_apply_wraps_exactly_the_default_targets_and_freezes_the_rest() -> None:
    model = tiny_llama()
    names = apply_diablo(model, CONFIG)
    assert names == [f"model.layers.{i}.{target}" for i in range(2) for target in TARGETS]
    assert list(diablo_modules(model)) == names
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"{name}.blocks" for name in names]
    # q 64->64: 8x8x8, k/v 64->32: 8x8x4, up 64->128: 8x8x16, down 128->64: 8x16x8
    assert trainable_parameters(model) == 2 * (512 + 2 * 256 + 2 * 1024)
    assert get_diablo_config(model) is CONFIG
    assert get_diablo_config(tiny_llama()) is None
    assert not any(module.training for module in diablo_modules(model).values())  # eval model stays in eval


def test_zero_init_gives_base_logits_exactly() -> None:
    base, adapted = tiny_llama(), tiny_llama()
    apply_diablo(adapted, CONFIG)
    ids = token_batch()
    with torch.no_grad():
        assert torch.equal(adapted(ids).logits, base(ids).logits)


def test_merged_equals_unmerged_and_unmerge_restores_weights() -> None:
    model = tiny_llama()
    original = {name: p.detach().clone() for name, p in model.named_parameters()}
    apply_diablo(model, CONFIG)
    randomize_blocks(model)
    ids = token_batch()
    with torch.no_grad():
        unmerged = model(ids).logits
        merge_diablo(model)
        merge_diablo(model)  # idempotent
        merged = model(ids).logits
    assert all(module.merged for module in diablo_modules(model).values())
    assert torch.allclose(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(merged, tiny_llama()(ids).logits, atol=1e-3)  # the blocks do change the model
    unmerge_diablo(model)
    restored = unload_diablo(model)
    for name, parameter in restored.named_parameters():
        assert torch.allclose(parameter, original[name], atol=1e-6), name
    assert not diablo_modules(restored) and get_diablo_config(restored) is None


def test_unload_with_merge_gives_plain_model_with_same_logits() -> None:
    model = tiny_llama()
    apply_diablo(model, CONFIG)
    randomize_blocks(model)
    ids = token_batch()
    with torch.no_grad():
        expected = model(ids).logits
        plain = unload_diablo(model, merge=True)
        assert type(plain.model.layers[0].self_attn.q_proj) is nn.Linear
        assert torch.allclose(plain(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_adamw_step_changes_only_adapter_tensors() -> None:
    model = tiny_llama().train()
    apply_diablo(model, DiaBloConfig(num_blocks=8, dropout=0.0))
    before = {name: t.clone() for name, t in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    ids = token_batch()
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in params)
    optimizer.step()
    for name, tensor in model.state_dict().items():
        changed = not torch.equal(tensor, before[name])
        assert changed == name.endswith(".blocks"), name


def test_layers_restricts_to_listed_decoder_layers() -> None:
    model = tiny_llama(num_hidden_layers=3)
    names = apply_diablo(model, DiaBloConfig(num_blocks=8, layers=[0, 2]))
    assert {layer_index(name) for name in names} == {0, 2}
    assert len(names) == 10
    assert type(model.model.layers[1].self_attn.q_proj) is nn.Linear


def test_layers_out_of_range_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"\[5\]") as raised:
        apply_diablo(tiny_llama(), DiaBloConfig(num_blocks=8, layers=(1, 5)))
    assert raised.value.code == "layers_out_of_range"


def test_layer_index_reads_the_path() -> None:
    assert layer_index("model.layers.12.mlp.up_proj") == 12
    assert layer_index("layers.3.q_proj") == 3
    assert layer_index("model.sublayers.3.q_proj") is None
    assert layer_index("lm_head") is None


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.my_q_proj_x = nn.Linear(8, 8)
        self.q_proj_block = nn.ModuleDict({"dense": nn.Linear(8, 8)})
        self.attn = nn.ModuleDict({"q_proj": nn.Linear(8, 8), "o_proj": nn.Linear(8, 8)})


def test_matching_is_exact_on_the_child_name() -> None:
    model = Toy()
    assert apply_diablo(model, DiaBloConfig(num_blocks=2, target_modules=("q_proj",))) == ["attn.q_proj"]
    assert type(model.my_q_proj_x) is nn.Linear and type(model.q_proj_block.dense) is nn.Linear


def test_no_match_lists_existing_linear_names() -> None:
    with pytest.raises(ValueError, match="my_q_proj_x") as raised:
        apply_diablo(Toy(), DiaBloConfig(num_blocks=2, target_modules=("proj",)))
    assert isinstance(raised.value, ConfigError) and raised.value.code == "no_target_modules"
    assert "o_proj" in str(raised.value) and "dense" in str(raised.value)


def test_applying_twice_is_an_error() -> None:
    model = tiny_llama()
    apply_diablo(model, CONFIG)
    with pytest.raises(ConfigError, match="already applied") as raised:
        apply_diablo(model, CONFIG)
    assert raised.value.code == "diablo_already_applied"
    assert not any(isinstance(m.base, DiaBloLinear) for m in diablo_modules(model).values())


def test_tied_lm_head_is_refused() -> None:
    model = tiny_llama(tie_word_embeddings=True)
    with pytest.raises(ConfigError) as raised:
        apply_diablo(model, DiaBloConfig(num_blocks=8, target_modules=("lm_head",)))
    assert raised.value.code == "tied_target_weight"


def test_adapter_state_dict_round_trip_and_strictness() -> None:
    source, target = tiny_llama(), tiny_llama()
    apply_diablo(source, CONFIG)
    apply_diablo(target, CONFIG)
    randomize_blocks(source)
    state = adapter_state_dict(source)
    assert list(state) == [f"{name}.blocks" for name in diablo_modules(source)]
    load_adapter_state_dict(target, state)
    ids = token_batch()
    with torch.no_grad():
        assert torch.equal(target(ids).logits, source(ids).logits)
    key = next(iter(state))
    cases = [
        ({k: v for k, v in state.items() if k != key}, "adapter_missing_tensor"),
        ({**state, "model.layers.9.mlp.up_proj.blocks": state[key]}, "adapter_extra_tensor"),
        ({**state, key: torch.zeros(1, 2, 3)}, "adapter_shape_mismatch"),
    ]
    for bad, code in cases:
        with pytest.raises(AdapterError) as raised:
            load_adapter_state_dict(target, bad)
        assert raised.value.code == code


def test_loading_into_merged_model_keeps_weights_consistent() -> None:
    source, target = tiny_llama(), tiny_llama()
    apply_diablo(source, CONFIG)
    apply_diablo(target, CONFIG)
    randomize_blocks(source)
    randomize_blocks(target, seed=9)
    merge_diablo(target)
    load_adapter_state_dict(target, adapter_state_dict(source))
    ids = token_batch()
    with torch.no_grad():
        assert torch.allclose(target(ids).logits, source(ids).logits, rtol=1e-5, atol=1e-5)


def test_fused_and_einsum_paths_train_the_same_model() -> None:
    ids, results = token_batch(), []
    for fused in (False, True):
        model = tiny_llama().train()
        apply_diablo(model, DiaBloConfig(num_blocks=8, dropout=0.0))
        randomize_blocks(model)
        for module in diablo_modules(model).values():
            module.fused = fused
        loss = model(ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters() if p.requires_grad]))
    (loss0, grads0), (loss1, grads1) = results
    assert torch.allclose(loss1, loss0, rtol=1e-6)
    for g0, g1 in zip(grads0, grads1, strict=True):
        assert torch.allclose(g1, g0, rtol=1e-4, atol=1e-7)
