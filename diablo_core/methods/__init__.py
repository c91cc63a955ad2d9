"""The ways of adapting a model, one package each (config, layer, model, adapter files), as PEFT
keeps its tuners."""
