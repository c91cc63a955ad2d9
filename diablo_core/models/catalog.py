"""The one rule naming base models: the ``"default"`` alias and the default model's ids, without torch.

The API, the registry and the worker name models by canonical id; ``diablo_core.models.loading`` loads them.
All of them turn an alias into an id here.
"""

from __future__ import annotations

DEFAULT_MODEL_ALIAS = "default"
DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The directory under ``<data_dir>/models/`` holding the default model converted from its GGUF.
DEFAULT_CHECKPOINT_DIR = "SmolLM2-135M-Instruct"


def canonical_model_id(name: str, default: str = DEFAULT_MODEL_ALIAS) -> str:
    """The canonical id of ``name``: the alias ``"default"`` (or an empty name) becomes ``default``, and
    ``default`` itself, when it is the alias or empty, the built-in default model's hub id.

    Args:
        name: A model id or the alias.
        default: The configured default model (a service may set another one); the alias means the built-in.
    """
    name = name.strip()
    if name in ("", DEFAULT_MODEL_ALIAS):
        name = default.strip()
    return DEFAULT_MODEL_ID if name in ("", DEFAULT_MODEL_ALIAS) else name
