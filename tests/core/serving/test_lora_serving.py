"""LoRA adapters served by the same engine as DiaBlo ones: one batch mixes LoRA, DiaBlo and base rows."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from diablo_core.generation.decoding import generate
from diablo_core.methods.lora.adapter_io import save_lora_adapter
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.methods.lora.model import apply_lora
from diablo_core.serving import AdapterRef, GenerationRequest, InferenceEngine
from diablo_core.serving.adapter_cache import read_adapter
from diablo_core.serving.multi_adapter import MultiAdapterModel
from tests.core.serving.conftest import random_ids, sha256_of

LORA_CONFIGS = {
    "r4": LoRAConfig(rank=4, alpha=8.0),
    "r2": LoRAConfig(rank=2, alpha=6.0, target_modules=("q_proj", "o_proj", "down_proj"), layers=(0,)),
}
PROMPTS = ["Hi", "Tell me a story about a tiny model", "abc", "The quick brown fox jumps over"]


@pytest.fixture(scope="module")
def make_lora(base_model, identity, tmp_path_factory):
    made: dict[str, AdapterRef] = {}

    def make(name: str) -> AdapterRef:
        if name not in made:
            adapted = copy.deepcopy(base_model)
            apply_lora(adapted, LORA_CONFIGS[name])
            generator = torch.Generator().manual_seed(len(made) + 3)
            with torch.no_grad():
                for key, parameter in adapted.named_parameters():
                    if ".lora_" in key:  # B starts at zero: make the adapter do something
                        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
            directory = tmp_path_factory.mktemp(f"lora-{name}")
            save_lora_adapter(adapted, directory, base_model=identity)
            made[name] = AdapterRef(sha256_of(directory), directory)
        return made[name]

    return make


def peft_generate(base_model, tokenizer, directory: Path, request: GenerationRequest):
    """PEFT's own forward: the saved adapter loaded with ``PeftModel.from_pretrained``, unmerged."""
    model = PeftModel.from_pretrained(copy.deepcopy(base_model), str(directory)).eval()
    return generate(model, tokenizer, prompt=request.prompt, max_new_tokens=request.max_tokens)


def test_lora_rows_add_their_own_update_over_the_shared_product(
    shared_model, base_model, identity, make_lora
) -> None:
    ids = torch.cat([random_ids(9, seed) for seed in range(3)])  # (3, 9)
    routed = MultiAdapterModel(shared_model)
    refs = [make_lora("r4"), make_lora("r2")]
    for slot, ref in enumerate(refs, start=1):
        loaded = read_adapter(ref, identity, routed)
        routed.set_slot(slot, loaded.blocks, loaded.low_rank)
    with torch.no_grad(), routed.route([1, 0, 2]):
        mixed = shared_model(input_ids=ids).logits
    for row, ref in zip((0, 2), refs, strict=True):
        peft = PeftModel.from_pretrained(copy.deepcopy(base_model), str(ref.path)).eval()
        with torch.no_grad():
            expected = peft(input_ids=ids[row : row + 1]).logits
        torch.testing.assert_close(mixed[row : row + 1], expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the same batch shape, so the same kernels: the base row must match bit for bit
        base_batch = base_model(input_ids=ids).logits  # (3, 9, vocab)
    torch.testing.assert_close(mixed[1:2], base_batch[1:2], rtol=0, atol=0)


def test_mixed_batch_of_lora_diablo_and_base_rows_answers_as_each_does_alone(
    shared_model, base_model, tokenizer, identity, make_adapter, make_lora
) -> None:
    refs = [None, make_lora("r4"), make_adapter("a"), make_lora("r2"), make_adapter("b"), make_lora("r4")]
    requests = [
        GenerationRequest(adapter=ref, prompt=PROMPTS[index % 4], max_tokens=6 + 2 * index)
        for index, ref in enumerate(refs)
    ]
    engine = InferenceEngine(shared_model, tokenizer, identity=identity, batch_window_s=0.2, max_adapters=4)
    with engine:
        alone = [engine.generate(request, timeout=60) for request in requests]
        handles = [engine.submit(request) for request in requests]
        together = [handle.result(timeout=60) for handle in handles]
    assert engine.stats.peak_batch_size >= 4
    assert together == alone
    for request, result in zip(requests, together, strict=True):
        if request.adapter is not None and request.adapter.path.name.startswith("lora"):
            assert result.text == peft_generate(base_model, tokenizer, request.adapter.path, request).text
    assert alone[1].text != alone[0].text  # the LoRA adapter changes the answer
