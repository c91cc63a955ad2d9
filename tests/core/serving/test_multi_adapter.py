"""Per-row multi-adapter forwards on one shared model equal each adapter merged into its own copy."""

from __future__ import annotations

import pytest
import torch

from diablo_core.serving import AdapterCache, MultiAdapterLinear, MultiAdapterModel
from diablo_core.serving.multi_adapter import gathered_block_update, single_block_update
from tests.core.serving.conftest import random_ids


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits  # (B, T, V)


@pytest.mark.parametrize("tokens", [1, 3])  # 1: the decode path (multiply-sum), 3: the prefill path (einsum)
def test_gathered_product_equals_per_row_block_diagonal_matmul(tokens: int):
    generator = torch.Generator().manual_seed(0)
    stack = torch.randn(3, 5, 4, 3, generator=generator)  # (K, n, bi, bo); in 18 pads to 20, out 14 crops 15
    stack[0] = 0
    x = torch.randn(4, tokens, 18, generator=generator)  # (B, T, in)
    slots = torch.tensor([2, 0, 1, 2])
    got = gathered_block_update(x, stack, slots, 14)
    for row, slot in enumerate(slots.tolist()):
        dense = torch.block_diag(*stack[slot])[:18, :14]  # (in, out)
        torch.testing.assert_close(got[row], x[row] @ dense, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(single_block_update(x[row : row + 1], stack[slot], 14)[0], x[row] @ dense)
    assert got[1].abs().max() == 0  # base row: no update at all


def test_mixed_batch_rows_equal_each_adapter_merged_alone(shared_model, identity, make_adapter, merged_copy):
    refs = [make_adapter(name) for name in ("a", "b", "c", "d")]
    adapters = MultiAdapterModel(shared_model)
    cache = AdapterCache(adapters, identity, max_adapters=4)
    slots = [cache.load(ref) for ref in refs]
    ids = torch.cat([random_ids(7, seed) for seed in range(6)])  # (6, 7)
    row_refs = [None, refs[0], refs[1], refs[2], refs[3], refs[0]]
    row_slots = [0 if ref is None else slots[refs.index(ref)] for ref in row_refs]
    with adapters.route(row_slots):
        mixed = _logits(shared_model, ids)  # (6, 7, V)
    for row, ref in enumerate(row_refs):
        alone = _logits(merged_copy(ref), ids[row : row + 1])[0]
        torch.testing.assert_close(mixed[row], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(mixed[1], mixed[0], atol=1e-3)  # the adapters really change the output


def test_uniform_batch_uses_single_adapter_path(shared_model, identity, make_adapter, merged_copy):
    ref = make_adapter("b")
    adapters = MultiAdapterModel(shared_model)
    slot = AdapterCache(adapters, identity).load(ref)
    ids = torch.cat([random_ids(5, 1), random_ids(5, 2)])  # (2, 5)
    with adapters.route([slot, slot]):
        assert adapters.routing.uniform == slot
        routed = _logits(shared_model, ids)
    torch.testing.assert_close(routed, _logits(merged_copy(ref), ids), rtol=1e-4, atol=1e-5)


def test_weights_untouched_and_unrouted_forward_is_the_base(shared_model, base_model, identity, make_adapter):
    adapters = MultiAdapterModel(shared_model)
    AdapterCache(adapters, identity).load(make_adapter("a"))
    wrapped = [module for module in shared_model.modules() if isinstance(module, MultiAdapterLinear)]
    assert len(wrapped) == 10  # q, k, v, up, down in 2 layers
    originals = dict(base_model.named_parameters())
    for name, parameter in shared_model.named_parameters():
        assert torch.equal(parameter, originals[name.replace(".base.", ".")])  # no weight was changed
    ids = random_ids(6, 3)
    torch.testing.assert_close(_logits(shared_model, ids), _logits(base_model, ids), rtol=0, atol=0)


def test_cleared_slot_serves_the_base(shared_model, base_model, identity, make_adapter):
    adapters = MultiAdapterModel(shared_model)
    slot = AdapterCache(adapters, identity).load(make_adapter("d"))
    adapters.clear_slot(slot)
    ids = random_ids(6, 4)
    with adapters.route([slot]):
        torch.testing.assert_close(_logits(shared_model, ids), _logits(base_model, ids), rtol=0, atol=0)
