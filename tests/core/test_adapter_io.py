"""save_adapter / load_adapter: round trip, file contents, and every refusal with its code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diablo_core.errors import AdapterError
from diablo_core.methods.diablo.adapter_io import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_adapter,
    load_adapter_tensors,
    read_adapter_config,
    save_adapter,
)
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, diablo_modules, get_diablo_config, merge_diablo
from diablo_core.models.identity import BaseModelIdentity, attach_identity, compute_content_hash
from tests.core.tiny import randomize_blocks, tiny_llama, token_batch

CONFIG = DiaBloConfig(
    num_blocks=8, target_modules=("q_proj", "v_proj", "down_proj"), dropout=0.1, layers=(1,)
)


@pytest.fixture
def trained(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A tiny model with random (as if trained) blocks, and the directory its adapter was saved to."""
    model = tiny_llama()
    apply_diablo(model, CONFIG)
    randomize_blocks(model)
    return model, save_adapter(model, tmp_path / "adapter")


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(token_batch()).logits


def test_save_then_load_into_plain_model_gives_identical_logits(trained: tuple) -> None:
    model, directory = trained
    fresh = tiny_llama()
    assert load_adapter(fresh, directory) == CONFIG
    assert get_diablo_config(fresh) == CONFIG
    assert torch.equal(logits(fresh), logits(model))


def test_load_into_model_with_same_config_applied(trained: tuple) -> None:
    model, directory = trained
    fresh = tiny_llama()
    apply_diablo(
        fresh, DiaBloConfig(num_blocks=8, target_modules=("q_proj", "v_proj", "down_proj"), layers=(1,))
    )
    load_adapter(fresh, directory)
    assert torch.equal(logits(fresh), logits(model))


def test_saved_files_hold_config_identity_and_tensors_only(trained: tuple) -> None:
    model, directory = trained
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no temp files left
    data = json.loads((directory / CONFIG_FILE).read_text())
    assert data["method"] == "diablo"
    assert (data["num_blocks"], data["target_modules"], data["dropout"], data["layers"]) == (
        8,
        ["q_proj", "v_proj", "down_proj"],
        0.1,
        [1],
    )
    assert data["base_model"]["content_hash"] == compute_content_hash(tiny_llama())
    assert data["modules"]["model.layers.1.mlp.down_proj"] == {
        "shape": [8, 16, 8],
        "in_features": 128,
        "out_features": 64,
    }
    assert data["dtype"] == "float32" and data["library"]["version"]
    tensors = load_file(directory / WEIGHTS_FILE)
    assert sorted(tensors) == sorted(f"{name}.blocks" for name in diablo_modules(model))
    assert read_adapter_config(directory) == data


def test_save_records_given_identity_and_merged_models_save_their_blocks(tmp_path: Path) -> None:
    model = tiny_llama()
    apply_diablo(model, CONFIG)
    randomize_blocks(model)
    merge_diablo(model)
    identity = BaseModelIdentity(name="tiny", content_hash=compute_content_hash(tiny_llama()))
    directory = save_adapter(model, tmp_path / "a", base_model=identity)
    assert read_adapter_config(directory)["base_model"] == {
        "name": "tiny",
        "content_hash": identity.content_hash,
        "quantization": None,  # a full-precision base, recorded explicitly
    }
    fresh = tiny_llama()
    load_adapter(fresh, directory)
    assert torch.allclose(logits(fresh), logits(model), rtol=1e-5, atol=1e-5)


def test_load_refuses_a_different_base_model(trained: tuple) -> None:
    _, directory = trained
    other = tiny_llama(seed=7)
    with pytest.raises(AdapterError) as raised:
        load_adapter(other, directory)
    assert raised.value.code == "adapter_base_mismatch"
    assert compute_content_hash(tiny_llama()) in str(raised.value)
    assert compute_content_hash(other) in str(raised.value)
    assert not diablo_modules(other)  # nothing changed


def test_load_uses_an_attached_identity(trained: tuple) -> None:
    _, directory = trained
    other = tiny_llama(seed=7)
    attach_identity(other, BaseModelIdentity("tiny", compute_content_hash(tiny_llama())))
    load_adapter(other, directory)  # trusted: the identity was recorded when the weights were loaded
    assert diablo_modules(other)


def rewrite_tensors(directory: Path, change: dict) -> None:
    tensors = load_file(directory / WEIGHTS_FILE)
    for key, value in change.items():
        if value is None:
            del tensors[key]
        else:
            tensors[key] = value
    save_file(tensors, directory / WEIGHTS_FILE)


KEY = "model.layers.1.self_attn.q_proj.blocks"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({KEY: None}, "adapter_missing_tensor"),
        ({"model.layers.0.self_attn.q_proj.blocks": torch.zeros(8, 8, 8)}, "adapter_extra_tensor"),
        ({KEY: torch.zeros(8, 8, 4)}, "adapter_shape_mismatch"),
    ],
)
def test_load_refuses_bad_tensors(trained: tuple, change: dict, code: str) -> None:
    _, directory = trained
    rewrite_tensors(directory, change)
    fresh = tiny_llama()
    for load in (lambda: load_adapter(fresh, directory), lambda: load_adapter_tensors(directory)):
        with pytest.raises(AdapterError) as raised:
            load()
        assert raised.value.code == code
    assert not diablo_modules(fresh)


def test_load_refuses_shapes_that_do_not_fit_the_model(trained: tuple) -> None:
    _, directory = trained
    data = json.loads((directory / CONFIG_FILE).read_text())
    data["modules"][KEY.removesuffix(".blocks")]["shape"] = [4, 16, 16]
    (directory / CONFIG_FILE).write_text(json.dumps(data))
    rewrite_tensors(directory, {KEY: torch.zeros(4, 16, 16)})
    fresh = tiny_llama()
    with pytest.raises(AdapterError) as raised:
        load_adapter(fresh, directory)
    assert raised.value.code == "adapter_shape_mismatch"
    assert not diablo_modules(fresh) and get_diablo_config(fresh) is None  # rolled back


def test_load_refuses_a_model_with_another_diablo_layout(trained: tuple) -> None:
    _, directory = trained
    fresh = tiny_llama()
    apply_diablo(fresh, DiaBloConfig(num_blocks=4))
    with pytest.raises(AdapterError) as raised:
        load_adapter(fresh, directory)
    assert raised.value.code == "adapter_config_invalid"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(method="lora"), "method"),
        (lambda d: d.update(num_blocks=0), "num_blocks"),
        (lambda d: d.update(dropout=2.0), "dropout"),
        (lambda d: d.pop("base_model"), "base_model"),
        (lambda d: d.update(modules={}), "modules"),
        (lambda d: d.update(rank=8), "rank"),
        (lambda d: d.update(format_version=2), "format_version"),
        (lambda d: d["modules"].update(extra={"shape": [1, 2]}), "shape"),
    ],
)
def test_invalid_config_is_refused(trained: tuple, edit: object, message: str) -> None:
    _, directory = trained
    data = json.loads((directory / CONFIG_FILE).read_text())
    edit(data)
    (directory / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(AdapterError, match=message) as raised:
        load_adapter(tiny_llama(), directory)
    assert raised.value.code == "adapter_config_invalid"


def test_unreadable_files_are_refused(trained: tuple) -> None:
    _, directory = trained
    (directory / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterError) as raised:
        load_adapter_tensors(directory)
    assert raised.value.code == "adapter_config_invalid"
    (directory / CONFIG_FILE).write_text("{not json")
    with pytest.raises(AdapterError, match="JSON"):
        read_adapter_config(directory)


def test_missing_adapter_and_plain_model_saves(tmp_path: Path) -> None:
    with pytest.raises(AdapterError) as raised:
        load_adapter(tiny_llama(), tmp_path / "nothing")
    assert raised.value.code == "adapter_not_found"
    with pytest.raises(AdapterError) as raised:
        save_adapter(tiny_llama(), tmp_path / "out")
    assert raised.value.code == "adapter_not_found"
