"""The README.md of an export: what the weights are, where they come from, and how to load them."""

from __future__ import annotations

from pathlib import Path

from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.models.identity import BaseModelIdentity


def adapter_summary(config: DiaBloConfig | LoRAConfig) -> tuple[str, str]:
    """The method's name and a sentence part on its adapter: blocks (DiaBlo) or rank and alpha (LoRA)."""
    layers = "all" if config.layers is None else ", ".join(str(layer) for layer in config.layers)
    where = f"on {', '.join(config.target_modules)} (layers: {layers})"
    if isinstance(config, LoRAConfig):
        return "LoRA", f"LoRA (PEFT) of rank {config.rank} and alpha {config.alpha:g} {where}"
    return "DiaBlo", f"DiaBlo with {config.num_blocks} diagonal blocks {where}"


def model_card(
    identity: BaseModelIdentity, config: DiaBloConfig | LoRAConfig, adapter_sha256: str, body: str
) -> str:
    """Markdown with a YAML header: the base model, its true source, the adapter and ``body`` (usage)."""
    source = identity.source or f"the checkpoint {identity.name}"
    method, adapter = adapter_summary(config)
    return (
        "---\n"
        f"base_model: {identity.name}\n"
        "library_name: transformers\n"
        f"tags: [{method.lower()}, fine-tuned]\n"
        "---\n\n"
        f"# A {method} fine-tune, merged\n\n"
        f"Base model: `{identity.name}` (content hash `{identity.content_hash}`).\n\n"
        f"Base weights: {source}.\n\n"
        f"{_quantized_note(identity)}"
        f"Adapter: {adapter}; adapter_model.safetensors sha256 `{adapter_sha256}`. The adapter's update is "
        "added into the base weights in float32, so these weights answer as the service does with the "
        "adapter applied.\n\n"
        f"{body}"
    )


def _quantized_note(identity: BaseModelIdentity) -> str:
    """For an adapter trained on a quantized base: which weights were merged, and in what precision."""
    if identity.quantization is None:
        return ""
    return (
        f"The adapter was trained on the base quantized to {identity.quantization} (bitsandbytes); it was "
        f"merged into those {identity.quantization} weights dequantized, the weights it was trained "
        "against, and the result is stored in full precision.\n\n"
    )


HF_USAGE = """## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
messages = [{"role": "user", "content": "What is 2 + 2?"}]
ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
print(tokenizer.decode(model.generate(ids, max_new_tokens=32, do_sample=False)[0][ids.shape[1]:]))
```
"""


def write_model_card(
    directory: Path, identity: BaseModelIdentity, config: DiaBloConfig | LoRAConfig, adapter_sha256: str
) -> Path:
    """Write ``README.md`` (the model card of a merged checkpoint) into ``directory``."""
    path = directory / "README.md"
    path.write_text(model_card(identity, config, adapter_sha256, HF_USAGE))
    return path
