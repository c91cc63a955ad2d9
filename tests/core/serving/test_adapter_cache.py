"""AdapterCache: checksum, base identity and shape checks; LRU eviction by count and bytes; pinning."""

from __future__ import annotations

import shutil

import pytest
import torch

from diablo_core.errors import AdapterError
from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.models.identity import BaseModelIdentity
from diablo_core.serving import AdapterCache, AdapterRef, MultiAdapterModel
from tests.core.serving.conftest import ADAPTER_CONFIGS, random_ids, write_adapter
from tests.core.tiny_tokenizer import make_tiny_model


@pytest.fixture
def cache(shared_model, identity) -> AdapterCache:
    return AdapterCache(MultiAdapterModel(shared_model), identity, max_adapters=2)


def _logits(cache: AdapterCache, slot: int) -> torch.Tensor:
    with torch.no_grad(), cache.model.route([slot]):
        return cache.model.model(input_ids=random_ids(5, 0)).logits


def test_eviction_by_count_is_least_recently_used_and_frees_the_slot(cache, make_adapter, base_model):
    first, second, third = make_adapter("a", 1), make_adapter("a", 2), make_adapter("a", 3)
    first_slot = cache.load(first)
    cache.load(second)
    cache.release(first.sha256)
    cache.release(second.sha256)
    assert cache.acquire(first.sha256) == first_slot  # now second is the least recently used
    cache.release(first.sha256)
    third_slot = cache.load(third)
    assert cache.resident() == [first.sha256, third.sha256]
    assert second.sha256 not in cache
    cache.release(third.sha256)
    assert cache.discard(third.sha256)
    with torch.no_grad():
        base = base_model(input_ids=random_ids(5, 0)).logits
    torch.testing.assert_close(_logits(cache, third_slot), base, rtol=0, atol=0)  # the slot was cleared


def test_eviction_by_bytes(shared_model, identity, make_adapter):
    refs = [make_adapter("b", seed) for seed in range(3)]
    size = AdapterCache(MultiAdapterModel(shared_model), identity).read(refs[0]).nbytes
    cache = AdapterCache(MultiAdapterModel(shared_model), identity, max_adapters=10, max_bytes=2 * size + 1)
    for ref in refs:
        cache.load(ref)
        cache.release(ref.sha256)
    assert cache.resident() == [refs[1].sha256, refs[2].sha256]
    assert cache.nbytes == 2 * size


def test_pinned_adapters_are_never_evicted(cache, make_adapter):
    first, second, third = make_adapter("a", 1), make_adapter("a", 2), make_adapter("a", 3)
    cache.load(first)
    cache.load(second)
    assert cache.insert(cache.read(third)) is None  # both pinned by running requests
    cache.release(second.sha256)
    assert cache.load(third) is not None
    assert cache.resident() == [first.sha256, third.sha256]


def test_adapter_larger_than_the_byte_bound_is_refused(shared_model, identity, make_adapter):
    cache = AdapterCache(MultiAdapterModel(shared_model), identity, max_bytes=16)
    with pytest.raises(AdapterError) as caught:
        cache.load(make_adapter("a"))
    assert caught.value.code == "adapter_too_large"


def test_checksum_mismatch_is_refused(cache, make_adapter, tmp_path):
    ref = make_adapter("a")
    with pytest.raises(AdapterError) as caught:
        cache.load(AdapterRef("0" * 64, ref.path))
    assert caught.value.code == "adapter_checksum_mismatch"
    copied = shutil.copytree(ref.path, tmp_path / "replaced")
    data = bytearray((copied / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor value
    (copied / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(AdapterError) as caught:
        cache.load(AdapterRef(ref.sha256, copied))
    assert caught.value.code == "adapter_checksum_mismatch"
    assert len(cache) == 0


def test_adapter_of_another_base_is_refused(cache, tokenizer, tmp_path):
    other = make_tiny_model(len(tokenizer), seed=1)
    foreign = BaseModelIdentity("other", "sha256:" + "1" * 64)
    ref = write_adapter(other, ADAPTER_CONFIGS["a"], tmp_path / "other", foreign, seed=0)
    with pytest.raises(AdapterError) as caught:
        cache.load(ref)
    assert caught.value.code == "adapter_base_mismatch"


def test_adapter_whose_shapes_do_not_fit_the_model_is_refused(cache, tokenizer, identity, tmp_path):
    wider = make_tiny_model(len(tokenizer))
    wider.model.layers[0].self_attn.q_proj = torch.nn.Linear(64, 80, bias=False)  # another q_proj width
    ref = write_adapter(wider, DiaBloConfig(num_blocks=4, target_modules=("q_proj",)), tmp_path, identity, 0)
    with pytest.raises(AdapterError) as caught:
        cache.load(ref)
    assert caught.value.code == "adapter_shape_mismatch"


def test_missing_adapter_directory_is_reported(cache, tmp_path):
    with pytest.raises(AdapterError) as caught:
        cache.load(AdapterRef("a" * 64, tmp_path / "nothing"))
    assert caught.value.code == "adapter_not_found"


def test_sha256_reference_is_normalized_and_validated(tmp_path):
    assert AdapterRef("sha256:" + "AB" * 32, tmp_path).sha256 == "ab" * 32
    with pytest.raises(ValueError, match="sha256"):
        AdapterRef("abc", tmp_path)
