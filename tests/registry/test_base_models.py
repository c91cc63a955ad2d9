"""The torch-free base-model list: the default model and local checkpoints, by canonical id."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.base_models import DEFAULT_MODEL_ID, canonical_model_id, find_base_model, load_source
from registry.settings import Settings


def test_base_models_without_weights(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert canonical_model_id("default", settings) == DEFAULT_MODEL_ID
    assert load_source(DEFAULT_MODEL_ID, settings) == "default"
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "mine" / "config.json").write_text("{}")
    assert load_source("mine", settings) == str(tmp_path / "models" / "mine")
    assert find_base_model("nope", settings) is None
    with pytest.raises(LookupError):
        load_source("nope", settings)
    custom = Settings(data_dir=tmp_path, default_model="mine")
    assert canonical_model_id("default", custom) == "mine"
