"""A merged export of an adapter trained on a quantized base (NF4 or int8, DiaBlo or QLoRA-style LoRA):
merged into the weights it was trained against, dequantized, and written in full precision, so plain
transformers gives the logits the service computes on the quantized base with the adapter applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from diablo_core.export.build import ExportSource, export_model
from diablo_core.export.formats import ExportRequest
from diablo_core.generation.decoding import build_prompt_ids
from diablo_core.methods.adapters import adapter_method
from diablo_core.methods.diablo.adapter_io import save_adapter
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.methods.lora.adapter_io import save_lora_adapter
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.methods.lora.model import apply_lora, lora_parameters
from diablo_core.models.loading import load_base_model
from diablo_core.models.quantization import model_quantization
from tests.api.tiny_serving import CONFIGS, save_tiny_model, sha256_of, unpack
from tests.core.tiny import randomize_blocks

MESSAGES = [{"role": "user", "content": "What is 12 + 30?"}]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "model"
    save_tiny_model(directory)
    return directory


def trained_on(quantization: str, method: str, tiny_dir: Path, directory: Path) -> Path:
    """An adapter with random weights, saved from a model whose base is ``quantization``-packed."""
    loaded = load_base_model(str(tiny_dir), quantization=quantization)
    if method == "diablo":
        apply_diablo(loaded.model, CONFIGS["b"])
        randomize_blocks(loaded.model, seed=5, scale=0.3)
        return save_adapter(loaded.model, directory, base_model=loaded.identity)
    apply_lora(loaded.model, LoRAConfig(rank=2, alpha=4.0))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in lora_parameters(loaded.model):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return save_lora_adapter(loaded.model, directory, base_model=loaded.identity)


@pytest.mark.parametrize(("quantization", "method"), [("nf4", "diablo"), ("nf4", "lora"), ("int8", "diablo")])
def test_merged_export_of_a_quantized_adapter_gives_the_service_logits_in_full_precision(
    quantization: str, method: str, tiny_dir: Path, tmp_path: Path
) -> None:
    adapter = trained_on(quantization, method, tiny_dir, tmp_path / "adapter")
    source = ExportSource(adapter, sha256_of(adapter), str(tiny_dir), tmp_path / "data")

    folder = unpack(export_model(source, ExportRequest("merged"), tmp_path / "exports"), tmp_path / "merged")

    served = load_base_model(str(tiny_dir), quantization=quantization)  # the service's path: packed base
    adapter_method(adapter).load(served.model, adapter)
    prompt = torch.tensor([build_prompt_ids(served.tokenizer, messages=MESSAGES)])
    with torch.no_grad():
        expected = served.model(prompt).logits  # (1, T, V)
        merged = AutoModelForCausalLM.from_pretrained(folder).eval()
        assert model_quantization(merged) is None  # plain linears, full precision
        assert all(parameter.dtype == torch.float32 for parameter in merged.parameters())
        actual = merged(prompt).logits  # (1, T, V)
        plain = load_base_model(str(tiny_dir)).model(prompt).logits  # the full-precision base alone
    # NF4 computes with its dequantized weights: the merged weights reproduce it. LLM.int8() also rounds the
    # activations to 8 bits in every call, which no full-precision checkpoint can do: close, not equal.
    tolerance = {"nf4": 1e-4, "int8": 1e-2}[quantization]
    assert torch.allclose(actual, expected, atol=tolerance), (actual - expected).abs().max()
    assert not torch.allclose(actual, plain, atol=1e-3)  # the update is really in the weights
    card = (folder / "README.md").read_text()
    assert f"quantized to {quantization}" in card
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


def test_lora_loaded_into_a_model_in_eval_mode_drops_nothing(tiny_dir: Path, tmp_path: Path) -> None:
    adapter = trained_on("nf4", "lora", tiny_dir, tmp_path / "adapter")
    served = load_base_model(str(tiny_dir))  # eval mode, as the service and evaluation load it
    adapter_method(adapter).load(served.model, adapter, allow_quantization_mismatch=True)
    assert not any(module.training for module in served.model.modules())
    prompt = torch.tensor([build_prompt_ids(served.tokenizer, messages=MESSAGES)])
    with torch.no_grad():
        assert torch.equal(served.model(prompt).logits, served.model(prompt).logits)  # no dropout draws
