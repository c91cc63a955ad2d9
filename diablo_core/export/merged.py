"""A merged Hugging Face checkpoint: base weights plus the adapter's update, with tokenizer and model card.

The adapter is DiaBlo's or LoRA's (PEFT's files; merged with PEFT's ``merge_and_unload``). The update is added
in the base model's dtype (float32 on the CPU), so the checkpoint answers as the service does with the adapter
applied; ``AutoModelForCausalLM.from_pretrained`` loads it with no DiaBlo or PEFT code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import GenerationConfig

from diablo_core.export.model_card import write_model_card
from diablo_core.methods.adapters import adapter_method
from diablo_core.models.loading import LoadedModel


def save_merged(base: LoadedModel, adapter_dir: Path, directory: Path, adapter_sha256: str) -> Path:
    """Merge the adapter in ``adapter_dir`` into ``base.model`` (in place) and save the checkpoint.

    Args:
        base: A freshly loaded base model; it is changed (merged) and should not be used afterwards.
        adapter_dir: The adapter's folder (``adapter_config.json`` + ``adapter_model.safetensors``), DiaBlo's
            or LoRA's (PEFT's format).
        directory: Where the checkpoint goes (created).
        adapter_sha256: Recorded in the model card.

    Returns:
        ``directory``, holding config, safetensors weights, tokenizer (with its chat template), generation
        config and a README.md model card.

    Raises:
        AdapterError: The adapter is unreadable or belongs to other base weights (``adapter_base_mismatch``).
    """
    method = adapter_method(adapter_dir)
    config = method.load(base.model, adapter_dir)  # checks the base model's content hash first
    model = method.unload(base.model, merge=True)  # (out, in) weights now hold W + delta
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    base.tokenizer.save_pretrained(directory)
    generation_config(model, base.tokenizer).save_pretrained(directory)
    write_model_card(directory, base.identity, config, adapter_sha256)
    return directory


def generation_config(model: Any, tokenizer: Any) -> GenerationConfig:
    """Token ids for generation: every id the service stops on (the tokenizer's eos and the model's)."""
    eos = {tokenizer.eos_token_id} - {None}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos |= {configured} if isinstance(configured, int) else set(configured or ())
    ordered = sorted(eos)
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=ordered[0] if len(ordered) == 1 else ordered,
        pad_token_id=tokenizer.pad_token_id,
    )
