"""DiaBloLinear: a frozen nn.Linear plus a trainable block-diagonal update (the DiaBlo adapter).

Shapes used below: ``in``/``out`` are the layer's features, ``n`` the effective block count, ``bi``/``bo``
the block sizes (``ceil(in/N)``, ``ceil(out/N)``) and ``...`` any leading batch dimensions (``B, T``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diablo_core.errors import ConfigError
from diablo_core.methods.diablo.fused import (
    FusedDiaBlo,
    FusedDroppedDiaBlo,
    dense_update,
    sample_dropped,
    to_blocks,
)
from diablo_core.models.quantization import compute_dtype_of, quantization_of

# Above this adapter dropout the dropped-position correction touches too many entries to beat the einsum path.
MAX_FUSED_DROPOUT = 0.25


def block_layout(in_features: int, out_features: int, num_blocks: int) -> tuple[int, int, int]:
    """Returns ``(n, bi, bo)``: effective block count and block sizes for a requested ``num_blocks``.

    ``bi = ceil(in/N)``, ``bo = ceil(out/N)`` and ``n = max(ceil(in/bi), ceil(out/bo))``, which can be
    smaller than ``N`` when a dimension does not divide evenly.
    """
    if min(in_features, out_features, num_blocks) < 1:
        raise ValueError(
            f"features and num_blocks must be positive, got {in_features}, {out_features}, {num_blocks}"
        )
    block_in = math.ceil(in_features / num_blocks)
    block_out = math.ceil(out_features / num_blocks)
    count = max(math.ceil(in_features / block_in), math.ceil(out_features / block_out))
    return count, block_in, block_out


def block_update_with(x: Tensor, blocks: Tensor, out_features: int) -> Tensor:
    """The adapter branch ``x · blockdiag(blocks)[:in, :out]`` as one batched matrix product.

    Args:
        x: Input of shape ``(..., in)``.
        blocks: Block tensor of shape ``(n, bi, bo)``; cast to ``x``'s dtype (autocast may lower it further).
        out_features: Output size ``out`` the result is cropped to.

    Returns:
        Tensor of shape ``(..., out)`` in the compute dtype.
    """
    count, block_in, block_out = blocks.shape
    xb = to_blocks(x, count, block_in)  # (..., n, bi)
    yb = torch.einsum("...ni,nio->...no", xb, blocks.to(x.dtype))  # (..., n, bo)
    return yb.reshape(*yb.shape[:-2], count * block_out)[..., :out_features]  # (..., out)


class DiaBloLinear(nn.Module):
    """A frozen ``nn.Linear`` with a trainable block-diagonal update ``y = x W^T + b + x·blockdiag(A)``.

    The base may be a quantized bitsandbytes linear (NF4 ``Linear4bit``, int8 ``Linear8bitLt``): the
    output is then the quantized layer's own output plus the block update, always on the einsum path (the
    fused path would fold the update into a packed weight), and the layer cannot be merged.

    Args:
        base: The linear layer to adapt; its parameters are frozen.
        num_blocks: Requested number of diagonal blocks ``N``.
        dropout: Dropout probability on the adapter branch's input (the frozen path sees the clean input).
        dtype: Dtype of the blocks; defaults to the base's dtype (a quantized base's compute dtype).

    Attributes:
        blocks: Trainable ``(n, bi, bo)`` parameter, zero-initialised (the layer starts equal to ``base``).
        merged: Whether the update is currently added into ``base.weight``.
        disabled: When True the layer computes its base alone (``model.diablo_disabled``): with the blocks
            at zero-init that is the reference policy DPO compares against, from the same weights.
        fused: Selects the folded-weight training forward ``x (W + D)^T + b`` (default True); same function
            as the einsum path (see
            ``diablo_core.methods.diablo.fused``). With adapter dropout it folds ``W + D/(1-p)`` and
            corrects only the dropped entries, drawn as positions rather than a mask. It applies while
            training the blocks with dropout at most 0.25; otherwise (and always at inference) the einsum
            path runs. Set False to force the einsum path.
    """

    def __init__(
        self, base: nn.Linear, num_blocks: int, dropout: float = 0.0, dtype: torch.dtype | None = None
    ):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"DiaBloLinear wraps an nn.Linear, got {type(base).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.n_blocks, self.block_in, self.block_out = block_layout(
            self.in_features, self.out_features, num_blocks
        )
        shape = (self.n_blocks, self.block_in, self.block_out)
        dtype, device = dtype or compute_dtype_of(base), base.weight.device
        self.blocks = nn.Parameter(torch.zeros(shape, dtype=dtype, device=device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False
        self.fused = True  # benchmarks/layer_forward.py: 0.80-0.92x the einsum path's time at 640 tokens

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"blocks=({self.n_blocks}, {self.block_in}, {self.block_out}), "
            f"merged={self.merged}, fused={self.fused}"
        )

    def block_update(self, x: Tensor) -> Tensor:
        """The adapter branch alone for input ``(..., in)``: returns ``(..., out)`` (no dropout applied)."""
        return block_update_with(x, self.blocks, self.out_features)

    def delta_weight(self) -> Tensor:
        """The dense ``(out, in)`` update the blocks represent, in the blocks' dtype.

        It is the same whether or not the layer is merged (merging changes ``base.weight``, not the blocks).
        """
        return dense_update(self.blocks, self.in_features, self.out_features)

    def forward(self, x: Tensor) -> Tensor:
        if self.disabled:
            if self.merged:
                raise RuntimeError("a merged DiaBloLinear cannot be switched off; call unmerge() first")
            return self.base(x)  # (..., out): the base alone
        if self.merged:
            if self.training and torch.is_grad_enabled() and self.blocks.requires_grad:
                raise RuntimeError("a merged DiaBloLinear cannot train its blocks; call unmerge() first")
            return self.base(x)  # (..., out): the update already lives in base.weight
        if self._use_fused():
            weight, bias, p = self.base.weight, self.base.bias, self._dropout_p()
            if p == 0.0:
                return FusedDiaBlo.apply(x, weight, bias, self.blocks)  # (..., out)
            dropped = sample_dropped(x.numel(), p, x.device)  # (K,) flat positions into x
            return FusedDroppedDiaBlo.apply(x, weight, bias, self.blocks, dropped, p)  # (..., out)
        y = self.base(x)  # (..., out)
        return y + self.block_update(self.dropout(x)).to(y.dtype)  # (..., out)

    def _dropout_p(self) -> float:
        return self.dropout.p if isinstance(self.dropout, nn.Dropout) else 0.0

    def _use_fused(self) -> bool:
        """Fused only while training the blocks with a frozen base and adapter dropout at most 0.25.

        Inference keeps the einsum path: at a few tokens per call the weight-sized add costs more than
        the activation-sized branch it replaces.
        """
        training_blocks = self.training and torch.is_grad_enabled() and self.blocks.requires_grad
        fusable_dropout = self._dropout_p() <= MAX_FUSED_DROPOUT
        frozen_plain_base = not self.base.weight.requires_grad and self.quantization is None
        return self.fused and training_blocks and fusable_dropout and frozen_plain_base

    @property
    def quantization(self) -> str | None:
        """The base's quantization (``"nf4"``, ``"int8"``), or None for a plain ``nn.Linear``."""
        return quantization_of(self.base)

    @torch.no_grad()
    def merge(self) -> None:
        """Adds the update into ``base.weight`` (in the weight's dtype); a no-op when already merged.

        Raises:
            ConfigError: ``merge_into_quantized_base`` when the base is quantized: the packed weight cannot
                hold the update. Dequantize the model first (``dequantize_model``), then merge.
        """
        if self.quantization is not None:
            raise ConfigError(
                f"cannot merge a DiaBlo adapter into a {self.quantization}-quantized base layer: dequantize "
                "the model first (diablo_core.models.quantization.dequantize_model), then merge",
                code="merge_into_quantized_base",
            )
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtracts the update from ``base.weight`` (exact in fp32); a no-op when not merged."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False
