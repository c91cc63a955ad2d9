"""DiaBlo: trainable diagonal blocks on frozen linear layers (config, layer, fused training path,
compiled kernels, apply/merge, adapter files)."""
