"""A tiny local base model and DiaBlo adapters on disk, registered like a job would, for inference tests.

The model is a 2-layer Llama with the byte-level ChatML tokenizer, saved as a local checkpoint that
``registry.base_models`` lists as ``tiny``. Adapters get random non-zero blocks; the reference answer for
an adapter is ``diablo_core.generation.decoding.generate`` on a copy of the model with the adapter merged.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from diablo_core.generation.decoding import GenerationResult, generate
from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE, load_adapter, save_adapter
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, merge_diablo
from diablo_core.methods.lora.adapter_io import save_lora_adapter
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.methods.lora.model import apply_lora, lora_parameters
from diablo_core.models.identity import BaseModelIdentity
from diablo_core.models.loading import LoadedModel, load_base_model
from registry.settings import Settings
from tests.api.conftest import make_settings, record_adapter
from tests.core.tiny import randomize_blocks
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer

TINY_MODEL = "tiny"
CONFIGS = {
    "a": DiaBloConfig(num_blocks=4),
    "b": DiaBloConfig(num_blocks=8, target_modules=("q_proj", "v_proj", "o_proj", "gate_proj")),
    "c": DiaBloConfig(num_blocks=4, target_modules=("up_proj", "down_proj"), layers=(1,)),
    "d": DiaBloConfig(num_blocks=16, target_modules=("k_proj", "up_proj")),
}


def save_tiny_model(directory: Path) -> LoadedModel:
    """Write the tiny checkpoint to ``directory`` and return it loaded as the server will load it."""
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return load_base_model(str(directory))


def sha256_of(directory: Path) -> str:
    return hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()


def write_adapter(base: LoadedModel, config: DiaBloConfig, directory: Path, seed: int, identity=None) -> Path:
    """An adapter of ``config`` with random blocks, saved against ``identity`` (default: the base's)."""
    adapted = copy.deepcopy(base.model)
    apply_diablo(adapted, config)
    randomize_blocks(adapted, seed=seed, scale=0.3)
    save_adapter(adapted, directory, base_model=identity or base.identity)
    return directory


def write_lora_adapter(base: LoadedModel, config: LoRAConfig, directory: Path, seed: int) -> Path:
    """A LoRA adapter of ``config`` in PEFT's format, with random A and B (PEFT starts B at zero)."""
    adapted = copy.deepcopy(base.model)
    apply_lora(adapted, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in lora_parameters(adapted):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    save_lora_adapter(adapted, directory, base_model=base.identity)
    return directory


def other_identity() -> BaseModelIdentity:
    """An identity of weights that are not the tiny model's."""
    return BaseModelIdentity(name="elsewhere", content_hash="sha256:" + "0" * 64)


@dataclass
class TinyServing:
    """The tiny model (as loaded) and adapters written once per session, by short name."""

    base: LoadedModel
    model_dir: Path
    adapters: dict[str, Path]
    _references: dict[tuple[Any, ...], GenerationResult]

    def install(self, settings: Settings, name: str, key: str, base_model: str = TINY_MODEL) -> Path:
        """Copy adapter ``key`` under ``settings.adapters_dir`` and register it as model ``name``."""
        target = settings.adapters_dir / name.replace(":", "_").replace("/", "_")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.adapters[key], target)
        size = (target / WEIGHTS_FILE).stat().st_size
        record_adapter(settings, name, target, size, base_model=base_model, sha256=sha256_of(target))
        return target

    def reference(self, key: str | None, **request: Any) -> GenerationResult:
        """What ``generate`` gives on a copy of the model with adapter ``key`` (None: base) merged."""
        cache_key = (key, repr(sorted(request.items())))
        if cache_key not in self._references:
            model = copy.deepcopy(self.base.model)
            if key is not None:
                load_adapter(model, self.adapters[key])
                merge_diablo(model)
            self._references[cache_key] = generate(model, self.base.tokenizer, **request)
        return self._references[cache_key]


def build_tiny_serving(root: Path) -> TinyServing:
    """Save the tiny model under ``root/model`` and adapters a-d (plus ``foreign``, for other weights)."""
    base = save_tiny_model(root / "model")
    adapters = {
        key: write_adapter(base, config, root / key, seed)
        for seed, (key, config) in enumerate(CONFIGS.items())
    }
    adapters["foreign"] = write_adapter(base, CONFIGS["a"], root / "foreign", 9, other_identity())
    return TinyServing(base, root / "model", adapters, {})


def link_tiny_model(settings: Settings, serving: TinyServing) -> None:
    """Make the tiny checkpoint the local base model ``tiny`` of ``settings.data_dir``."""
    models = settings.data_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / TINY_MODEL).symlink_to(serving.model_dir, target_is_directory=True)


def tiny_settings(data_dir: Path, database_url: str, serving: TinyServing, **overrides: Any) -> Settings:
    """Settings serving the tiny model on the CPU in fp32, ``max_tokens`` up to 64, plus ``overrides``."""
    # fp32: answers are compared with generate on the fp32 model; "auto" would pick bf16 on a bf16 CPU.
    values = {
        "default_model": TINY_MODEL,
        "device": "cpu",
        "max_tokens_limit": 64,
        "inference_dtype": "fp32",
        **overrides,
    }
    settings = make_settings(data_dir, database_url, **values)
    link_tiny_model(settings, serving)
    return settings


# Fixtures of the inference test modules, which import them by these names (pytest registers them as
# ``tiny`` and ``settings``); a module's ``settings`` replaces the plain one of tests/api/conftest.py.
@pytest.fixture(scope="module", name="tiny")
def tiny_fixture(tmp_path_factory: pytest.TempPathFactory) -> TinyServing:
    """The tiny model and its adapters, built once per module."""
    return build_tiny_serving(tmp_path_factory.mktemp("tiny-serving"))


@pytest.fixture(name="settings")
def serving_settings(
    tmp_path: Path, database_url: str, tiny: TinyServing, request: pytest.FixtureRequest
) -> Settings:
    """Settings serving the tiny model; ``@pytest.mark.parametrize("settings", [{...}], indirect=True)`` adds
    settings."""
    return tiny_settings(tmp_path / "data", database_url, tiny, **getattr(request, "param", {}))


def unpack(archive: Path, into: Path) -> Path:
    """Extracts an export archive (one top folder) into ``into``; returns that folder."""
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
        (root,) = {name.split("/")[0] for name in tar.getnames()}
    return into / root
