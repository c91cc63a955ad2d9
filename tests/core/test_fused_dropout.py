"""The fused training path with adapter dropout: dropped positions drawn directly, corrected exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diablo_core.methods.diablo import fused as fused_module
from diablo_core.methods.diablo import kernels as dropped_kernels
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.fused import FusedDroppedDiaBlo, default_chunk, sample_dropped, walk_gaps
from diablo_core.methods.diablo.layer import DiaBloLinear
from diablo_core.methods.diablo.model import apply_diablo, diablo_modules
from tests.core.test_layer import SHAPES, make_layer, relative_error
from tests.core.tiny import randomize_blocks, tiny_llama, token_batch


@pytest.fixture(params=["kernels", "tensor ops"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test on the compiled CPU kernels and again on the tensor-op path (what CUDA and bf16 take)."""
    if request.param == "tensor ops":
        monkeypatch.setattr(fused_module, "kernels_apply", lambda *tensors: False)
        monkeypatch.setattr(fused_module, "numba_available", lambda: False)
    else:
        assert dropped_kernels.numba_available()
    return request.param


def masked_reference(layer: DiaBloLinear, x: torch.Tensor, dropped: torch.Tensor, p: float) -> torch.Tensor:
    """The einsum path with an explicit mask: ``dropped`` zeroed, the rest scaled by 1/(1-p)."""
    mask = torch.ones(x.numel(), dtype=x.dtype)
    mask[dropped] = 0.0
    return layer.base(x) + layer.block_update(x * mask.view_as(x) / (1.0 - p))


def test_dropped_positions_are_sorted_distinct_in_range_and_a_fraction_p(path: str) -> None:
    torch.manual_seed(0)
    numel, p = 2_000_000, 0.05
    dropped = sample_dropped(numel, p)
    assert dropped.dtype == torch.int64
    assert bool((dropped[1:] > dropped[:-1]).all())
    assert int(dropped[0]) >= 0 and int(dropped[-1]) < numel
    assert abs(len(dropped) / numel - p) < 1e-3  # six standard deviations: 6 * sqrt(p(1-p)/numel) = 9e-4


def test_every_position_is_dropped_independently_with_probability_p(path: str) -> None:
    torch.manual_seed(1)
    draws, numel, p = 6_000, 6, 0.3
    masks = torch.zeros(draws, numel)
    for draw in range(draws):
        masks[draw, sample_dropped(numel, p)] = 1.0
    frequency = masks.mean(0)
    assert torch.all((frequency - p).abs() < 0.036), frequency  # six standard deviations
    together = (masks[:, 0] * masks[:, 5]).mean().item()
    assert abs(together - p * p) < 0.023  # independent pairs: P(both) = p^2
    assert abs(masks.sum(1).var().item() - numel * p * (1 - p)) < 0.15  # binomial spread


def test_small_chunks_still_reach_the_end(path: str) -> None:
    torch.manual_seed(2)
    dropped = sample_dropped(10_000, 0.05, chunk=3)  # thousands of top-up rounds
    assert bool((dropped[1:] > dropped[:-1]).all()) and int(dropped[-1]) < 10_000
    assert 0.04 < len(dropped) / 10_000 < 0.06 and int(dropped[-1]) > 9_000


@pytest.mark.parametrize(("numel", "p", "chunk"), [(590_000, 0.05, None), (10_000, 0.05, 3), (7, 0.5, None)])
def test_compiled_walk_draws_what_the_tensor_ops_draw(numel: int, p: float, chunk: int | None) -> None:
    torch.manual_seed(3)
    compiled = sample_dropped(numel, p, chunk=chunk)
    after_compiled = torch.rand(4)
    torch.manual_seed(3)
    reference = walk_gaps(numel, p, torch.device("cpu"), chunk or default_chunk(numel, p))
    assert torch.equal(compiled, reference)
    assert torch.equal(torch.rand(4), after_compiled)  # the same uniforms consumed: the RNG state agrees


def test_cpu_float_training_takes_the_compiled_kernels() -> None:
    x, blocks, dropped = torch.randn(4, 8), torch.zeros(2, 4, 4), torch.tensor([1, 9])
    assert dropped_kernels.kernels_apply(dropped, x, blocks)
    assert not dropped_kernels.kernels_apply(dropped, x.bfloat16(), blocks.bfloat16())  # numpy has no bf16
    assert not dropped_kernels.kernels_apply(dropped, x, blocks.double())


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1])
def test_sampling_refuses_p_outside_the_open_unit_interval(p: float) -> None:
    with pytest.raises(ValueError, match="p must be in"):
        sample_dropped(10, p)


@pytest.mark.parametrize(("in_f", "out_f", "n"), SHAPES)
@pytest.mark.parametrize("leading", [(7,), (2, 5)])
def test_fused_dropped_equals_masked_einsum_with_gradients(
    in_f: int, out_f: int, n: int, leading: tuple[int, ...], path: str
) -> None:
    layer, p = make_layer(in_f, out_f, n).train(), 0.2
    x, target = torch.randn(*leading, in_f), torch.randn(*leading, out_f)
    dropped = sample_dropped(x.numel(), p)
    assert 0 < len(dropped) < x.numel()
    results = []
    for fused in (False, True):
        layer.blocks.grad = None
        xi = x.clone().requires_grad_(True)
        if fused:
            y = FusedDroppedDiaBlo.apply(xi, layer.base.weight, layer.base.bias, layer.blocks, dropped, p)
        else:
            y = masked_reference(layer, xi, dropped, p)
        (y * target).sum().backward()
        results.append((y.detach(), xi.grad, layer.blocks.grad.clone()))
    (y0, gx0, gb0), (y1, gx1, gb1) = results
    assert y1.shape == (*leading, out_f)
    assert relative_error(y1, y0) < 1e-6
    assert relative_error(gx1, gx0) < 1e-6
    assert relative_error(gb1, gb0) < 1e-6


@pytest.mark.parametrize(("in_f", "out_f", "n"), [(10, 7, 3), (8, 12, 4)])
def test_fused_dropped_passes_gradcheck(in_f: int, out_f: int, n: int, path: str) -> None:
    layer = make_layer(in_f, out_f, n).double()
    x = torch.randn(3, in_f, dtype=torch.double, requires_grad=True)
    blocks = layer.blocks.detach().clone().requires_grad_(True)
    dropped = sample_dropped(x.numel(), 0.3)
    function = lambda x, blocks: FusedDroppedDiaBlo.apply(  # noqa: E731
        x, layer.base.weight, layer.base.bias, blocks, dropped, 0.3
    )
    assert torch.autograd.gradcheck(function, (x, blocks))


def test_layer_with_dropout_trains_on_the_fused_dropped_path() -> None:
    layer = make_layer(16, 12, 4, dropout=0.1).train()
    assert layer.fused
    x = torch.randn(8, 16)
    torch.manual_seed(5)
    y = layer(x)
    assert type(y.grad_fn).__name__ == "FusedDroppedDiaBloBackward"
    torch.manual_seed(5)
    dropped = sample_dropped(x.numel(), 0.1)  # the same draw the layer made
    assert relative_error(y, masked_reference(layer, x, dropped, 0.1)) < 1e-6
    assert not torch.allclose(y, layer.base(x) + layer.block_update(x), atol=1e-4)  # something was dropped
    assert torch.allclose(layer.eval()(x), layer.base(x) + layer.block_update(x), atol=1e-6)  # no dropout


def test_high_dropout_and_unfused_layers_take_the_einsum_path() -> None:
    x = torch.randn(4, 16)
    high = make_layer(16, 12, 4, dropout=0.5).train()
    assert "Fused" not in type(high(x).grad_fn).__name__
    unfused = make_layer(16, 12, 4, dropout=0.1).train()
    unfused.fused = False
    assert "Fused" not in type(unfused(x).grad_fn).__name__


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_dropped_in_bf16(autocast: bool) -> None:
    layer = make_layer(64, 24, 8, dropout=0.05).train()
    x = torch.randn(16, 64)
    if not autocast:
        layer.base.to(torch.bfloat16)
        x = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        torch.manual_seed(7)
        y = layer(x)
    assert y.dtype == torch.bfloat16 and type(y.grad_fn).__name__ == "FusedDroppedDiaBloBackward"
    y.float().sum().backward()
    assert layer.blocks.grad.dtype == torch.float32 and torch.count_nonzero(layer.blocks.grad) > 0
    torch.manual_seed(7)
    dropped = sample_dropped(x.numel(), 0.05)
    reference = masked_reference(layer.float(), x.float(), dropped, 0.05)
    assert relative_error(y, reference) < 2e-2


def _loss_and_grads(checkpointing: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model = tiny_llama().train()
    apply_diablo(model, DiaBloConfig(num_blocks=8, dropout=0.1))
    randomize_blocks(model)
    assert all(module.fused for module in diablo_modules(model).values())
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = token_batch()
    torch.manual_seed(11)
    loss = model(ids, labels=ids).loss
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters() if p.requires_grad]


def test_checkpoint_recomputation_redraws_the_same_dropped_positions() -> None:
    loss0, grads0 = _loss_and_grads(checkpointing=False)
    loss1, grads1 = _loss_and_grads(checkpointing=True)
    assert torch.equal(loss1, loss0)
    for g0, g1 in zip(grads0, grads1, strict=True):
        assert torch.allclose(g1, g0, rtol=1e-5, atol=1e-7)


def test_dropout_changes_the_adapter_gradient_between_draws() -> None:
    layer = make_layer(32, 32, 4, dropout=0.05).train()
    x = torch.randn(64, 32)
    grads = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        layer.blocks.grad = None
        layer(x).sum().backward()
        grads.append(layer.blocks.grad.clone())
    assert not torch.allclose(grads[0], grads[1])
    assert isinstance(layer.dropout, nn.Dropout)
