"""DiaBloLinear against dense references: forward, fused path, gradients, dropout, merge, dtypes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diablo_core.methods.diablo.layer import DiaBloLinear, block_layout, block_update_with, dense_update

# (in, out, N): divisible, non-divisible, rectangular both ways, N larger than a dimension allows
SHAPES = [(16, 16, 4), (10, 7, 3), (64, 24, 8), (24, 64, 8), (10, 10, 6)]


def make_layer(in_f: int, out_f: int, n: int, dropout: float = 0.0, bias: bool = True) -> DiaBloLinear:
    torch.manual_seed(in_f * 1000 + out_f * 10 + n)
    layer = DiaBloLinear(nn.Linear(in_f, out_f, bias=bias), n, dropout=dropout)
    with torch.no_grad():
        layer.blocks.normal_()
    return layer


def reference(layer: DiaBloLinear, x: torch.Tensor) -> torch.Tensor:
    """x W^T + b + x·blockdiag(A)[:in, :out], in float64 with a dense block-diagonal matrix."""
    x64, w64 = x.double(), layer.base.weight.double()
    diag = torch.block_diag(*layer.blocks.double())[: layer.in_features, : layer.out_features]  # (in, out)
    bias = layer.base.bias.double() if layer.base.bias is not None else 0.0
    return x64 @ w64.T + bias + x64 @ diag


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


@pytest.mark.parametrize(
    ("in_f", "out_f", "n", "layout"),
    [(10, 7, 3, (3, 4, 3)), (64, 24, 8, (8, 8, 3)), (10, 10, 6, (5, 2, 2)), (4096, 11008, 64, (64, 64, 172))],
)
def test_block_layout(in_f: int, out_f: int, n: int, layout: tuple[int, int, int]) -> None:
    assert block_layout(in_f, out_f, n) == layout
    layer = DiaBloLinear(nn.Linear(in_f, out_f, device="meta"), n)
    assert (layer.n_blocks, layer.block_in, layer.block_out) == layout
    assert tuple(layer.blocks.shape) == layout and layer.blocks.is_meta


@pytest.mark.parametrize(("in_f", "out_f", "n"), SHAPES)
@pytest.mark.parametrize("leading", [(5,), (2, 3)])
def test_forward_matches_dense_reference(in_f: int, out_f: int, n: int, leading: tuple[int, ...]) -> None:
    layer = make_layer(in_f, out_f, n)
    x = torch.randn(*leading, in_f)
    for fused in (False, True):
        layer.fused = fused
        y = layer(x)
        assert y.shape == (*leading, out_f)
        assert relative_error(y, reference(layer, x)) < 1e-5


@pytest.mark.parametrize(("in_f", "out_f", "n"), SHAPES)
def test_delta_weight_is_transposed_block_diagonal(in_f: int, out_f: int, n: int) -> None:
    layer = make_layer(in_f, out_f, n)
    expected = torch.block_diag(*layer.blocks)[:in_f, :out_f].T
    assert torch.equal(layer.delta_weight(), expected)
    assert torch.equal(dense_update(layer.blocks, in_f, out_f), expected)


def test_zero_init_equals_base_exactly() -> None:
    layer = DiaBloLinear(nn.Linear(10, 7), 3)
    assert torch.count_nonzero(layer.blocks) == 0
    x = torch.randn(4, 10)
    assert torch.equal(layer(x), layer.base(x))
    assert not layer.base.weight.requires_grad and not layer.base.bias.requires_grad
    assert layer.blocks.requires_grad


@pytest.mark.parametrize(("in_f", "out_f", "n"), SHAPES)
def test_fused_path_matches_einsum_path_with_gradients(in_f: int, out_f: int, n: int) -> None:
    layer = make_layer(in_f, out_f, n).train()
    x = torch.randn(2, 3, in_f)
    target = torch.randn(2, 3, out_f)
    results = []
    for fused in (False, True):
        layer.fused = fused
        layer.blocks.grad = None
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        assert ("Fused" in type(y.grad_fn).__name__) == fused  # the fused path really ran
        (y * target).sum().backward()
        results.append((y.detach(), xi.grad, layer.blocks.grad.clone()))
    (y0, gx0, gb0), (y1, gx1, gb1) = results
    assert relative_error(y1, y0) < 1e-6
    assert relative_error(gx1, gx0) < 1e-6
    assert relative_error(gb1, gb0) < 1e-6


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("in_f", "out_f", "n"), SHAPES)
def test_block_gradient_is_full_finetuning_gradient_of_diagonal_block(
    in_f: int, out_f: int, n: int, fused: bool
) -> None:
    layer = make_layer(in_f, out_f, n).train()
    layer.fused = fused
    x, target = torch.randn(6, in_f), torch.randn(6, out_f)
    (layer(x) * target).sum().backward()
    dense = (layer.base.weight + layer.delta_weight()).detach().requires_grad_(True)  # (out, in)
    (nn.functional.linear(x, dense, layer.base.bias) * target).sum().backward()
    full_grad = dense.grad.T  # (in, out): the same layout as the blocks
    bi, bo = layer.block_in, layer.block_out
    for i in range(layer.n_blocks):
        rows, cols = slice(i * bi, min((i + 1) * bi, in_f)), slice(i * bo, min((i + 1) * bo, out_f))
        block_grad = layer.blocks.grad[i]
        expected = full_grad[rows, cols]
        assert torch.allclose(block_grad[: expected.shape[0], : expected.shape[1]], expected, atol=1e-5)
        assert torch.count_nonzero(block_grad[expected.shape[0] :]) == 0  # padded rows get no gradient
        assert torch.count_nonzero(block_grad[:, expected.shape[1] :]) == 0  # cropped columns neither


def test_dropout_applies_only_to_adapter_branch() -> None:
    layer = DiaBloLinear(nn.Linear(16, 12), 4, dropout=0.5).train()
    x = torch.randn(8, 16)
    assert torch.equal(layer(x), layer.base(x))  # zero blocks: the frozen path sees the clean input
    with torch.no_grad():
        layer.blocks.normal_()
    torch.manual_seed(3)
    y = layer(x)
    torch.manual_seed(3)
    mask = nn.functional.dropout(torch.ones_like(x), 0.5, training=True)  # same RNG draw as the layer's
    assert torch.allclose(y, layer.base(x) + layer.block_update(x * mask), atol=1e-6)
    assert not torch.allclose(y, layer.base(x) + layer.block_update(x), atol=1e-3)
    layer.eval()
    assert torch.allclose(layer(x), layer.base(x) + layer.block_update(x), atol=1e-6)


def test_fused_runs_only_when_training_blocks() -> None:
    layer = make_layer(16, 12, 4, dropout=0.0)
    assert layer.fused  # the default: measured faster in benchmarks/layer_forward.py
    x = torch.randn(3, 16)
    assert type(layer(x).grad_fn).__name__ == "FusedDiaBloBackward"
    assert "Fused" not in type(layer.eval()(x).grad_fn).__name__  # inference keeps the einsum path
    layer.train().blocks.requires_grad_(False)
    assert layer(x).grad_fn is None
    dropped = make_layer(16, 12, 4, dropout=0.1)  # dropout: tests/core/test_fused_dropout.py
    assert type(dropped(x).grad_fn).__name__ == "FusedDroppedDiaBloBackward"


def test_merge_equals_unmerged_and_unmerge_restores() -> None:
    layer = make_layer(10, 7, 3).eval()
    x = torch.randn(5, 10)
    original = layer.base.weight.detach().clone()
    unmerged = layer(x)
    layer.merge()
    assert layer.merged
    assert relative_error(layer(x), unmerged) < 1e-6
    assert relative_error(layer.base(x), unmerged) < 1e-6  # the plain linear now carries the update
    layer.merge()  # idempotent: no double add
    assert relative_error(layer(x), unmerged) < 1e-6
    assert torch.equal(layer.delta_weight(), torch.block_diag(*layer.blocks)[:10, :7].T)
    layer.unmerge()
    layer.unmerge()
    assert not layer.merged
    assert torch.allclose(layer.base.weight, original, atol=1e-6)
    assert relative_error(layer(x), unmerged) < 1e-6


def test_merged_layer_refuses_to_train() -> None:
    layer = make_layer(10, 7, 3).train()
    layer.merge()
    with pytest.raises(RuntimeError, match="unmerge"):
        layer(torch.randn(2, 10))
    with torch.no_grad():
        assert layer(torch.randn(2, 10)).shape == (2, 7)


def test_block_update_with_matches_layer() -> None:
    layer = make_layer(64, 24, 8)
    x = torch.randn(3, 4, 64)
    assert torch.equal(block_update_with(x, layer.blocks, 24), layer.block_update(x))


@pytest.mark.parametrize("fused", [False, True])
def test_bf16_base_with_fp32_blocks(fused: bool) -> None:
    layer = make_layer(64, 24, 8).train()
    layer.base.to(torch.bfloat16)
    layer.fused = fused
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16 and layer.blocks.dtype == torch.float32
    y.float().sum().backward()
    assert layer.blocks.grad.dtype == torch.float32
    assert relative_error(y, reference(layer, x)) < 2e-2


@pytest.mark.parametrize("fused", [False, True])
def test_autocast_bf16_with_fp32_weights(fused: bool) -> None:
    layer = make_layer(64, 24, 8).train()
    layer.fused = fused
    x = torch.randn(3, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert layer.blocks.grad.dtype == torch.float32 and torch.count_nonzero(layer.blocks.grad) > 0
    assert relative_error(y, reference(layer, x)) < 2e-2


def test_rejects_non_linear_and_bad_dropout() -> None:
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        DiaBloLinear(nn.Conv1d(4, 4, 1), 2)
    with pytest.raises(ValueError, match="dropout"):
        DiaBloLinear(nn.Linear(4, 4), 2, dropout=1.0)
