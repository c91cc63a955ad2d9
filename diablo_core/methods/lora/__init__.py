"""LoRA through PEFT, beside DiaBlo: config, apply (``get_peft_model``), adapter files in PEFT's format."""
