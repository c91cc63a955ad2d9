"""How a training run holds and computes in its resolved precision.

- ``fp32``: every weight in float32, no autocast.
- ``bf16``: the frozen base is STORED in bfloat16 (cast once, here, so no step casts 135M weights again); the
  adapter blocks stay float32 master weights, so their AdamW states are float32 too. The fused path adds the
  blocks into the bf16 weight it builds on the fly, and returns float32 block gradients. On CUDA a bf16
  autocast also covers the few float32 ops left; on the CPU nothing needs it. The loss is taken in float32.
- ``fp16`` (CUDA): the frozen base stored in float16 under float16 autocast (norms and softmax in float32),
  float32 blocks, and a gradient scaler against underflow.

Floating buffers (rotary ``inv_freq``) keep their dtype: the model computes its rotary angles in float32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from diablo_core.methods.adapters import method_of
from diablo_core.precision.hardware import torch_dtype


def hold_in_precision(model: nn.Module, precision: str) -> None:
    """Casts, in place, the frozen parameters to the precision's storage dtype and the adapter (DiaBlo blocks
    or LoRA matrices) to float32."""
    method = method_of(model)
    blocks = {id(parameter) for parameter in (method.trainable(model) if method else [])}
    storage = torch_dtype(precision)
    with torch.no_grad():
        for parameter in model.parameters():
            dtype = torch.float32 if id(parameter) in blocks else storage
            if parameter.is_floating_point() and parameter.dtype != dtype:
                parameter.data = parameter.data.to(dtype)


def autocast_for(precision: str, device: str) -> AbstractContextManager:
    """The autocast context of a forward pass: bf16/fp16 on CUDA, none on the CPU (weights are stored)."""
    if device.startswith("cuda") and precision in ("bf16", "fp16"):
        return torch.autocast(device_type="cuda", dtype=torch_dtype(precision))
    return nullcontext()


def grad_scaler_for(precision: str, device: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 runs (None otherwise: bf16 has fp32's exponent range)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
