"""Exports of a LoRA model: ``merged`` merges with PEFT's ``merge_and_unload`` into the same Hugging Face
checkpoint as for DiaBlo, and plain transformers then gives PEFT's logits and greedy answers; ``adapter``
gives PEFT's own files; ``gguf`` falls out of the same merge."""

from __future__ import annotations

import copy
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from diablo_core.export.build import ExportSource, export_model
from diablo_core.export.formats import ExportRequest
from diablo_core.export.gguf_file import unpermute_rope
from diablo_core.generation.decoding import build_prompt_ids
from diablo_core.methods.adapters import LORA, adapter_method
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.methods.lora.model import apply_lora, lora_modules, unload_lora
from diablo_core.models.loading import LoadedModel
from tests.api.tiny_serving import save_tiny_model, sha256_of, unpack, write_lora_adapter

CONFIG = LoRAConfig(rank=4, alpha=8.0, target_modules=("q_proj", "k_proj", "v_proj", "up_proj", "down_proj"))
MESSAGES = [{"role": "user", "content": "What is 12 + 30?"}]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return save_tiny_model(tmp_path_factory.mktemp("lora-export") / "model")


@pytest.fixture(scope="module")
def source(base: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> ExportSource:
    root = tmp_path_factory.mktemp("lora-source")
    adapter = write_lora_adapter(base, CONFIG, root / "adapter", seed=5)
    return ExportSource(adapter, sha256_of(adapter), base.model.config.name_or_path, root / "data")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def merged_dir(source: ExportSource, exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(export_model(source, ExportRequest("merged"), exports), tmp_path_factory.mktemp("merged"))


def peft_model(base: LoadedModel, directory: Path) -> PeftModel:
    """PEFT's own forward over the base: the adapter loaded with ``PeftModel.from_pretrained``, unmerged."""
    return PeftModel.from_pretrained(copy.deepcopy(base.model), str(directory)).eval()


def greedy(model: torch.nn.Module, prompt: torch.Tensor) -> list[int]:
    output = model.generate(input_ids=prompt, max_new_tokens=24, do_sample=False, eos_token_id=None)
    return output[0, prompt.shape[1] :].tolist()


def test_merged_lora_checkpoint_gives_peft_logits_and_answers(base, source, merged_dir) -> None:
    assert adapter_method(source.adapter_dir) is LORA
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not any(".lora_" in name for name, _ in merged.named_parameters())
    reference = peft_model(base, source.adapter_dir)
    prompt = torch.tensor([build_prompt_ids(base.tokenizer, messages=MESSAGES)])  # (1, T)
    with torch.no_grad():
        expected = reference(input_ids=prompt).logits  # (1, T, V)
        plain = base.model(input_ids=prompt).logits
        torch.testing.assert_close(merged(input_ids=prompt).logits, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter changes the answer
    answer = greedy(merged, prompt)
    assert answer == greedy(reference, prompt) and len(answer) == 24
    card = (merged_dir / "README.md").read_text()
    assert "# A LoRA fine-tune, merged" in card and "rank 4 and alpha 8" in card
    assert source.adapter_sha256 in card and "tags: [lora, fine-tuned]" in card


def test_adapter_archive_is_peft_format(base, source, exports, tmp_path) -> None:
    folder = unpack(export_model(source, ExportRequest("adapter"), exports), tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert sha256_of(folder) == source.adapter_sha256
    ids = torch.tensor([build_prompt_ids(base.tokenizer, messages=MESSAGES)])
    with torch.no_grad():
        loaded = peft_model(base, folder)(input_ids=ids).logits
        expected = peft_model(base, source.adapter_dir)(input_ids=ids).logits
    torch.testing.assert_close(loaded, expected, rtol=0, atol=0)


def test_gguf_of_a_lora_model_holds_the_merged_weights(source, exports, merged_dir) -> None:
    reader = gguf.GGUFReader(export_model(source, ExportRequest("gguf"), exports))
    assert "LoRA adapter" in reader.fields["general.description"].contents()
    merged = load_file(merged_dir / "model.safetensors")
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    expected = merged["model.layers.0.self_attn.q_proj.weight"].numpy()  # (64, 64)
    stored = unpermute_rope(np.array(q.data).reshape(expected.shape), 4)
    np.testing.assert_array_equal(stored, expected.astype(np.float16))


def test_unload_lora_without_merge_restores_the_base(base) -> None:
    model = copy.deepcopy(base.model)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    apply_lora(model, CONFIG)
    plain = unload_lora(model)
    assert plain is model and lora_modules(model) == {}
    after = plain.state_dict()
    assert sorted(after) == sorted(before)
    assert all(torch.equal(after[name], value) for name, value in before.items())
