"""Quantized bases (NF4, int8): the DiaBlo layer over them against a dequantized reference; merging."""

import pytest
import torch
from torch import nn

from diablo_core.errors import ConfigError
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.layer import DiaBloLinear
from diablo_core.methods.diablo.model import apply_diablo, diablo_modules, merge_diablo, unload_diablo
from diablo_core.models.identity import compute_content_hash, model_identity
from diablo_core.models.quantization import (
    check_quantization,
    dequantize_linear,
    dequantize_model,
    model_quantization,
    quantization_of,
    quantize_linear,
    quantize_model,
    stored_bytes,
)
from tests.core.tiny import randomize_blocks, tiny_llama, token_batch

QUANTIZATIONS = ["nf4", "int8"]


def _linear(seed: int = 0, in_features: int = 192, out_features: int = 128) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features)


def _pair(quantization: str, dropout: float = 0.0) -> tuple[DiaBloLinear, DiaBloLinear]:
    """A DiaBlo layer over a quantized base and the same layer over that base dequantized (nn.Linear)."""
    quantized = quantize_linear(_linear(), quantization, torch.float32, "cpu")
    layer = DiaBloLinear(quantized, num_blocks=8, dropout=dropout).train()
    reference = DiaBloLinear(dequantize_linear(quantized), num_blocks=8, dropout=dropout).train()
    with torch.no_grad():
        layer.blocks.normal_(0, 0.05)
        reference.blocks.copy_(layer.blocks)
    return layer, reference


def _forward_backward(layer: DiaBloLinear, x: torch.Tensor, seed: int = 3) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)  # the same dropout mask in both layers (both run the einsum path)
    y = layer(x)  # (B, T, out)
    weights = torch.linspace(-1, 1, y.numel()).view_as(y)
    (y * weights).sum().backward()
    grads = (x.grad, layer.blocks.grad.clone())
    layer.blocks.grad = None
    return (y.detach(), *grads)


def test_check_quantization_names_the_choices():
    assert check_quantization(None) is None and check_quantization("nf4") == "nf4"
    with pytest.raises(ValueError, match=r"\['nf4', 'int8'\]"):
        check_quantization("int4")


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_layer_over_quantized_base_equals_dequantized_reference(quantization, dropout):
    layer, reference = _pair(quantization, dropout)
    reference.fused = False  # the same dropout draw as the quantized layer's einsum path
    x = torch.randn(2, 7, 192)

    y, grad_x, grad_blocks = _forward_backward(layer, x)
    y_ref, grad_x_ref, grad_blocks_ref = _forward_backward(reference, x)

    assert layer.quantization == quantization and not layer._use_fused()
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_x, grad_x_ref, atol=1e-5, rtol=1e-5)  # flows through the packed base
    torch.testing.assert_close(grad_blocks, grad_blocks_ref, atol=1e-5, rtol=1e-5)
    assert grad_x.abs().sum() > 0 and grad_blocks.abs().sum() > 0


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_block_gradient_is_exact_against_the_fused_reference(quantization):
    layer, reference = _pair(quantization)
    assert reference._use_fused()  # the reference trains on the folded-weight path
    x = torch.randn(3, 5, 192)
    _, grad_x, grad_blocks = _forward_backward(layer, x)
    _, grad_x_ref, grad_blocks_ref = _forward_backward(reference, x)
    torch.testing.assert_close(grad_blocks, grad_blocks_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_x, grad_x_ref, atol=1e-5, rtol=1e-5)


def test_input_gradient_survives_an_eval_forward_without_grad():
    """bitsandbytes repacks a CPU NF4 weight on its first no-grad eval forward; that path has no backward."""
    layer, reference = _pair("nf4")
    x = torch.randn(2, 4, 192)
    with torch.no_grad():
        layer.eval()(x)
    layer.train()
    _, grad_x, _ = _forward_backward(layer, x)
    _, grad_x_ref, _ = _forward_backward(reference, x)
    torch.testing.assert_close(grad_x, grad_x_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_quantize_model_keeps_embeddings_norms_and_head(quantization):
    model = tiny_llama()
    plain = tiny_llama()
    paths = quantize_model(model, quantization, torch.float32, "cpu")

    assert len(paths) == 2 * 7 and "lm_head" not in paths
    assert model_quantization(model) == quantization and model_quantization(plain) is None
    assert quantization_of(model.lm_head) is None and type(model.lm_head) is nn.Linear
    assert model.model.embed_tokens.weight.dtype == torch.float32
    assert model.model.norm.weight.dtype == torch.float32
    ids = token_batch()
    with torch.no_grad():
        drift = (model(ids).logits - plain(ids).logits).abs().max()
    assert 0 < drift < 0.5  # the quantization error, bounded


def test_nf4_linears_take_an_eighth_of_their_fp32_bytes():
    model = tiny_llama(hidden_size=256, intermediate_size=512)
    linears = [m for n, m in model.named_modules() if type(m) is nn.Linear and n != "lm_head"]
    fp32 = stored_bytes(nn.ModuleList(linears))
    quantize_model(model, "nf4", torch.float32, "cpu")
    packed = [m for m in model.modules() if quantization_of(m)]
    ratio = stored_bytes(nn.ModuleList(packed)) / fp32
    assert 0.12 < ratio <= 0.135  # 4 bits per weight plus double-quantized block scales


def test_identity_of_a_model_quantized_by_hand_names_its_quantization():
    model = tiny_llama()
    quantize_model(model, "nf4", torch.float32, "cpu")
    identity = model_identity(model)
    assert identity.quantization == "nf4"
    assert identity.content_hash != compute_content_hash(tiny_llama())  # hashes the dequantized weights
    apply_diablo(model, DiaBloConfig(num_blocks=4))
    assert compute_content_hash(model) == identity.content_hash  # adapting does not change it


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_merge_into_a_packed_base_is_refused_and_dequantize_then_merge_is_exact(quantization):
    model = tiny_llama()
    quantize_model(model, quantization, torch.float32, "cpu")
    apply_diablo(model, DiaBloConfig(num_blocks=4, dropout=0.0))
    randomize_blocks(model)
    ids = token_batch()
    with torch.no_grad():
        adapted = model(ids).logits

    with pytest.raises(ConfigError) as refused:
        merge_diablo(model)
    assert refused.value.code == "merge_into_quantized_base" and "dequantize" in refused.value.message
    assert not any(module.merged for module in diablo_modules(model).values())
    with pytest.raises(ConfigError, match="dequantize"):
        unload_diablo(model, merge=True)

    dequantize_model(model)
    with torch.no_grad():
        dequantized = model(ids).logits
    merged = unload_diablo(model, merge=True)
    assert model_quantization(merged) is None
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, dequantized, atol=1e-5, rtol=1e-5)
    # NF4 computes with exactly the dequantized weight; int8 inference also rounds activations to 8 bits.
    tolerance = 1e-4 if quantization == "nf4" else 2e-2
    torch.testing.assert_close(dequantized, adapted, atol=tolerance, rtol=0)


def test_gradient_checkpointing_gives_the_same_block_gradients_on_nf4():
    grads = []
    for checkpointing in (False, True):
        model = tiny_llama()
        quantize_model(model, "nf4", torch.float32, "cpu")
        apply_diablo(model, DiaBloConfig(num_blocks=4, dropout=0.0))
        randomize_blocks(model)
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        ids = token_batch()
        model.train()(ids, labels=ids).loss.backward()
        grads.append({path: m.blocks.grad for path, m in diablo_modules(model).items()})
    assert all(grad is not None and grad.abs().sum() > 0 for grad in grads[1].values())
    for path, grad in grads[0].items():
        torch.testing.assert_close(grads[1][path], grad, atol=1e-6, rtol=1e-5)
