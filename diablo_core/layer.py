"""DiaBloLinear: a frozen nn.Linear plus a trainable block-diagonal update (the DiaBlo adapter).

Shapes used below: ``in``/``out`` are the layer's features, ``n`` the effective block count, ``bi``/``bo``
the block sizes (``ceil(in/N)``, ``ceil(out/N)``) and ``...`` any leading batch dimensions (``B, T``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def _to_blocks(x: Tensor, count: int, size: int) -> Tensor:
    """Zero-pads the last dimension on the right to ``count * size`` and splits it into blocks."""
    pad = count * size - x.shape[-1]
    if pad:
        x = F.pad(x, (0, pad))  # (..., count * size)
    return x.reshape(*x.shape[:-1], count, size)  # (..., count, size)


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
    xb = _to_blocks(x, count, block_in)  # (..., n, bi)
    yb = torch.einsum("...ni,nio->...no", xb, blocks.to(x.dtype))  # (..., n, bo)
    return yb.reshape(*yb.shape[:-2], count * block_out)[..., :out_features]  # (..., out)


def dense_update(blocks: Tensor, in_features: int, out_features: int) -> Tensor:
    """Returns ``blockdiag(blocks)[:in, :out].T`` as a dense ``(out, in)`` tensor (same layout as ``W``)."""
    count, block_in, block_out = blocks.shape
    full = blocks.new_zeros(count, block_in, count, block_out)  # (n, bi, n, bo)
    index = torch.arange(count, device=blocks.device)
    full[index, :, index, :] = blocks  # block i sits at rows of chunk i and columns of chunk i
    return full.reshape(count * block_in, count * block_out)[:in_features, :out_features].T  # (out, in)


def _effective_weight(weight: Tensor, blocks: Tensor) -> Tensor:
    """``W + D`` in W's dtype, built on the fly (never stored between steps)."""
    out_features, in_features = weight.shape
    count, block_in, block_out = blocks.shape
    if count * block_in != in_features or count * block_out != out_features:
        return weight + dense_update(blocks, in_features, out_features).to(weight.dtype)  # (out, in)
    effective = weight.clone()  # (out, in)
    # Divisible shapes: add each A_i^T straight into W's diagonal block, touching only in*out/N entries.
    diagonal = effective.view(count, block_out, count, block_in).diagonal(dim1=0, dim2=2)  # (bo, bi, n)
    diagonal += blocks.permute(2, 1, 0).to(weight.dtype)  # (bo, bi, n): [p, q, i] = A_i[q, p]
    return effective


class _FusedDiaBlo(torch.autograd.Function):
    """``y = x (W + D)^T + b`` in one product; backward gives the block gradient as one batched product."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, blocks: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight, blocks)
        return F.linear(x, _effective_weight(weight, blocks), bias)  # (..., out)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, Tensor | None]:
        x, weight, blocks = ctx.saved_tensors
        count, block_in, block_out = blocks.shape
        grad_x = grad_blocks = None
        if ctx.needs_input_grad[0]:
            effective = _effective_weight(weight, blocks).to(grad_out.dtype)  # (out, in)
            grad_x = (grad_out @ effective).to(x.dtype)  # (..., in)
        if ctx.needs_input_grad[3]:
            xb = _to_blocks(x.to(grad_out.dtype), count, block_in).reshape(-1, count, block_in)  # (M, n, bi)
            gb = _to_blocks(grad_out, count, block_out).reshape(-1, count, block_out)  # (M, n, bo)
            grad_blocks = torch.einsum("mni,mno->nio", xb, gb).to(blocks.dtype)  # (n, bi, bo)
        return grad_x, None, None, grad_blocks


class DiaBloLinear(nn.Module):
    """A frozen ``nn.Linear`` with a trainable block-diagonal update ``y = x W^T + b + x·blockdiag(A)``.

    Args:
        base: The linear layer to adapt; its parameters are frozen.
        num_blocks: Requested number of diagonal blocks ``N``.
        dropout: Dropout probability on the adapter branch's input (the frozen path sees the clean input).
        dtype: Dtype of the blocks; defaults to the base weight's dtype.

    Attributes:
        blocks: Trainable ``(n, bi, bo)`` parameter, zero-initialised (the layer starts equal to ``base``).
        merged: Whether the update is currently added into ``base.weight``.
        fused: Selects the folded-weight training forward ``x (W + D)^T + b`` (default True); same function
            as the einsum path. It applies only while training the blocks with adapter dropout 0, because
            dropout on the adapter input cannot be folded into the frozen product; otherwise (and always at
            inference) the einsum path runs. Set False to force the einsum path.
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
        weight = base.weight
        self.blocks = nn.Parameter(torch.zeros(shape, dtype=dtype or weight.dtype, device=weight.device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
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
        if self.merged:
            if self.training and torch.is_grad_enabled() and self.blocks.requires_grad:
                raise RuntimeError("a merged DiaBloLinear cannot train its blocks; call unmerge() first")
            return self.base(x)  # (..., out): the update already lives in base.weight
        if self._use_fused():
            return _FusedDiaBlo.apply(x, self.base.weight, self.base.bias, self.blocks)  # (..., out)
        y = self.base(x)  # (..., out)
        return y + self.block_update(self.dropout(x)).to(y.dtype)  # (..., out)

    def _use_fused(self) -> bool:
        """Fused only while training the blocks without adapter dropout and with a frozen base.

        Inference keeps the einsum path: at a few tokens per call the weight-sized add costs more than
        the activation-sized branch it replaces.
        """
        training_blocks = self.training and torch.is_grad_enabled() and self.blocks.requires_grad
        adapter_dropout = isinstance(self.dropout, nn.Dropout) and self.dropout.p > 0
        return self.fused and training_blocks and not adapter_dropout and not self.base.weight.requires_grad

    @torch.no_grad()
    def merge(self) -> None:
        """Adds the update into ``base.weight`` (in the weight's dtype); a no-op when already merged."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtracts the update from ``base.weight`` (exact in fp32); a no-op when not merged."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False
