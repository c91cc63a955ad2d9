"""The README.md of an export: what the weights are, where they come from, and how to load them."""

from __future__ import annotations

from pathlib import Path

from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.models.identity import BaseModelIdentity


def model_card(identity: BaseModelIdentity, config: DiaBloConfig, adapter_sha256: str, body: str) -> str:
    """Markdown with a YAML header: the base model, its true source, the adapter and ``body`` (usage)."""
    source = identity.source or f"the checkpoint {identity.name}"
    layers = "all" if config.layers is None else ", ".join(str(layer) for layer in config.layers)
    return (
        "---\n"
        f"base_model: {identity.name}\n"
        "library_name: transformers\n"
        "tags: [diablo, fine-tuned]\n"
        "---\n\n"
        "# A DiaBlo fine-tune, merged\n\n"
        f"Base model: `{identity.name}` (content hash `{identity.content_hash}`).\n\n"
        f"Base weights: {source}.\n\n"
        f"Adapter: DiaBlo with {config.num_blocks} diagonal blocks on {', '.join(config.target_modules)} "
        f"(layers: {layers}); adapter_model.safetensors sha256 `{adapter_sha256}`. The adapter's update is "
        "added into the base weights in float32, so these weights answer as the service does with the "
        "adapter applied.\n\n"
        f"{body}"
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
    directory: Path, identity: BaseModelIdentity, config: DiaBloConfig, adapter_sha256: str
) -> Path:
    """Write ``README.md`` (the model card of a merged checkpoint) into ``directory``."""
    path = directory / "README.md"
    path.write_text(model_card(identity, config, adapter_sha256, HF_USAGE))
    return path
