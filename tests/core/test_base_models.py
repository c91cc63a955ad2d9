import json
import os
import threading
import time

import pytest
import torch

from diablo_core.data.tokenization import IGNORE_INDEX, tokenize_example
from diablo_core.errors import ModelLoadError
from diablo_core.generation.decoding import generate
from diablo_core.models import loading as base_models
from diablo_core.models.catalog import DEFAULT_MODEL_ID, canonical_model_id
from diablo_core.models.identity import compute_content_hash
from diablo_core.models.loading import IDENTITY_FILE, ensure_default_checkpoint, load_base_model
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A tiny Llama and a tokenizer without a pad token, saved like any local checkpoint."""
    tokenizer = make_tiny_tokenizer()
    tokenizer.pad_token = None
    model = make_tiny_model(len(tokenizer))
    directory = tmp_path / "tiny"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, compute_content_hash(model)


def test_canonical_model_id():
    assert canonical_model_id("default") == DEFAULT_MODEL_ID
    assert canonical_model_id(" ") == DEFAULT_MODEL_ID
    assert canonical_model_id(DEFAULT_MODEL_ID) == DEFAULT_MODEL_ID
    assert canonical_model_id("org/other") == "org/other"
    # A configured default replaces the alias; a configured "default" (or nothing) is the built-in one.
    assert canonical_model_id("default", "mine") == "mine"
    assert canonical_model_id("org/other", "mine") == "org/other"
    assert canonical_model_id("", "default") == DEFAULT_MODEL_ID


def test_local_checkpoint_loads_with_identity_and_pad_token(tiny_checkpoint):
    directory, expected_hash = tiny_checkpoint

    loaded = load_base_model(str(directory), dtype=torch.bfloat16)

    assert loaded.identity.name == str(directory.resolve())
    assert loaded.identity.content_hash == expected_hash  # hashed before the dtype cast
    assert loaded.model.diablo_base_identity == loaded.identity
    assert loaded.model.dtype == torch.bfloat16 and not loaded.model.training
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token
    assert json.loads((directory / IDENTITY_FILE).read_text())["content_hash"] == expected_hash


def test_sidecar_is_reused_until_the_weights_change(tiny_checkpoint):
    directory, expected_hash = tiny_checkpoint
    load_base_model(str(directory))
    sidecar = directory / IDENTITY_FILE
    sidecar.write_text(sidecar.read_text().replace(expected_hash, "sha256:cached"))

    assert load_base_model(str(directory)).identity.content_hash == "sha256:cached"

    weights = directory / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert load_base_model(str(directory)).identity.content_hash == expected_hash


def test_missing_directory_is_model_not_found(tmp_path):
    with pytest.raises(ModelLoadError) as caught:
        load_base_model(str(tmp_path / "absent"))

    assert caught.value.code == "model_not_found"
    assert "absent" in str(caught.value)


def test_missing_gguf_package_is_model_not_found(tmp_path, monkeypatch):
    monkeypatch.setattr(base_models, "DEFAULT_GGUF_PACKAGE", "no_such_package_xyz")

    with pytest.raises(ModelLoadError, match="no_such_package_xyz") as caught:
        ensure_default_checkpoint(tmp_path)

    assert caught.value.code == "model_not_found"
    assert list((tmp_path / "models").iterdir()) == [tmp_path / "models" / ".SmolLM2-135M-Instruct.lock"]


def test_concurrent_conversions_run_once(tmp_path, monkeypatch):
    calls = []

    def fake_convert(directory):  # stands in for the 20 s GGUF dequantization
        calls.append(directory)
        time.sleep(0.2)
        (directory / IDENTITY_FILE).write_text("{}")

    monkeypatch.setattr(base_models, "_convert_default_gguf", fake_convert)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_default_checkpoint(tmp_path))) for _ in "ab"
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert results == [target, target] and len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        ".SmolLM2-135M-Instruct.lock",
        target.name,
    ]


@pytest.fixture(scope="module")
def default_model(tmp_path_factory):
    """The real default model, converted once into a fresh data dir."""
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, load_base_model("default", data_dir=data_dir)


@pytest.mark.slow
def test_default_model_converts_once_and_reloads_from_the_sidecar(default_model, monkeypatch):
    data_dir, first = default_model
    assert first.identity.name == DEFAULT_MODEL_ID
    assert first.identity.content_hash == compute_content_hash(first.model)
    assert not hasattr(first.model.config, "quantization_config")

    def no_rehash(model):
        raise AssertionError("a load after conversion must not hash the weights again")

    monkeypatch.setattr(base_models, "compute_content_hash", no_rehash)
    started = time.perf_counter()
    second = load_base_model(DEFAULT_MODEL_ID, data_dir=data_dir)
    print(f"default model load after conversion: {time.perf_counter() - started:.2f} s")

    assert second.identity == first.identity
    result = generate(
        second.model, second.tokenizer, messages=[{"role": "user", "content": "What is 2 + 3?"}]
    )
    assert result.text.strip() and result.finish_reason == "stop"


@pytest.mark.slow
def test_default_tokenizer_labels_only_the_assistant_turn(default_model):
    _, loaded = default_model
    messages = [{"role": "user", "content": "Add 2 and 3.\n"}, {"role": "assistant", "content": "2 + 3 = 5"}]

    example = tokenize_example({"messages": messages}, loaded.tokenizer)

    learned = [label for label in example.labels if label != IGNORE_INDEX]
    assert loaded.tokenizer.decode(learned) == "2 + 3 = 5<|im_end|>"
