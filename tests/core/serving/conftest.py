"""Fixtures for serving tests: a tiny byte-level chat model and adapters of different shapes saved to disk."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE, load_adapter, save_adapter
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, merge_diablo
from diablo_core.models.identity import BaseModelIdentity, model_identity
from diablo_core.serving import AdapterRef
from tests.core.tiny import randomize_blocks
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer

# Different N, targets and layers, so that one batch mixes block shapes and partially adapted models.
ADAPTER_CONFIGS = {
    "a": DiaBloConfig(num_blocks=4),
    "b": DiaBloConfig(num_blocks=8, target_modules=("q_proj", "v_proj", "o_proj", "gate_proj")),
    "c": DiaBloConfig(num_blocks=4, target_modules=("up_proj", "down_proj"), layers=(1,)),
    "d": DiaBloConfig(num_blocks=16, target_modules=("k_proj", "up_proj")),
}


@pytest.fixture(scope="session")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="session")
def base_model(tokenizer) -> nn.Module:
    """The pristine base model; tests copy it before handing it to an engine (which wraps layers)."""
    return make_tiny_model(len(tokenizer))


@pytest.fixture(scope="session")
def identity(base_model) -> BaseModelIdentity:
    return model_identity(base_model)


def sha256_of(directory: Path) -> str:
    return hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()


def write_adapter(
    model: nn.Module, config: DiaBloConfig, directory: Path, identity: BaseModelIdentity, seed: int
) -> AdapterRef:
    """Saves an adapter of ``config`` with random non-zero blocks for ``model`` and returns its reference."""
    adapted = copy.deepcopy(model)
    apply_diablo(adapted, config)
    randomize_blocks(adapted, seed=seed, scale=0.3)
    save_adapter(adapted, directory, base_model=identity)
    return AdapterRef(sha256_of(directory), directory)


@pytest.fixture(scope="session")
def make_adapter(base_model, identity, tmp_path_factory) -> Callable[..., AdapterRef]:
    """``make_adapter(name, seed)``: an adapter of ``ADAPTER_CONFIGS[name]``, written once, as a reference."""

    made: dict[tuple[str, int], AdapterRef] = {}

    def make(name: str, seed: int = 0) -> AdapterRef:
        if (name, seed) not in made:
            directory = tmp_path_factory.mktemp(f"adapter-{name}-{seed}")
            made[name, seed] = write_adapter(
                base_model, ADAPTER_CONFIGS[name], directory, identity, seed + 10
            )
        return made[name, seed]

    return make


@pytest.fixture(scope="session")
def merged_copy(base_model) -> Callable[[AdapterRef | None], nn.Module]:
    """The reference: a copy of the base model with the adapter loaded through adapter_io and merged."""
    cached: dict[str | None, nn.Module] = {}

    def build(ref: AdapterRef | None) -> nn.Module:
        key = None if ref is None else ref.sha256
        if key not in cached:
            model = copy.deepcopy(base_model)
            if ref is not None:
                load_adapter(model, ref.path)
                merge_diablo(model)
            cached[key] = model
        return cached[key]

    return build


@pytest.fixture
def shared_model(base_model) -> nn.Module:
    """A fresh copy of the base model for one engine or MultiAdapterModel."""
    return copy.deepcopy(base_model)


def random_ids(length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(seed))
