"""Training-time autograd functions that fold the DiaBlo update into the frozen product.

Both compute the same function as the einsum path of ``DiaBloLinear`` (``x W^T + b + drop(x)·blockdiag(A)``)
with one dense product against ``W + D`` built on the fly, so the tiny per-block products of the forward and
of the input gradient disappear; only the block gradient stays a batched product.

``FusedDiaBlo`` has no adapter dropout. ``FusedDroppedDiaBlo`` keeps dropout exact without a mask: with
``s = 1/(1-p)`` and ``P`` the dropped positions of ``x``,

    drop(x)·BD = s·x·BD - s·x[P]·BD

so the dense product runs against ``W + s·D`` and a correction touches only the dropped entries (``p`` of
them, 5% at the default). ``P`` is drawn directly as the gaps between successes of Bernoulli(p) trials
(geometric variates), which costs ``p·numel`` random numbers instead of ``numel``, and backward keeps only
``x`` (shared by q/k/v, which see the same input) and the int64 positions.

On the CPU (float32/64) the drawing, both corrections and most block gradients run in compiled kernels
(``diablo_core.methods.diablo.kernels``); CUDA, bf16/fp16 and hosts without numba use the tensor ops here.

Shapes: ``M`` rows (all leading dimensions flattened), ``in``/``out`` features, ``n`` blocks of ``bi x bo``,
``K`` dropped positions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from diablo_core.methods.diablo.kernels import (
    block_products,
    draw_positions,
    kernels_apply,
    numba_available,
    subtract_dropped_gradients,
    subtract_dropped_output,
)

__all__ = ["FusedDiaBlo", "FusedDroppedDiaBlo", "effective_weight", "sample_dropped", "to_blocks"]


def to_blocks(x: Tensor, count: int, size: int) -> Tensor:
    """Zero-pads the last dimension on the right to ``count * size`` and splits it into blocks."""
    pad = count * size - x.shape[-1]
    if pad:
        x = F.pad(x, (0, pad))  # (..., count * size)
    return x.reshape(*x.shape[:-1], count, size)  # (..., count, size)


def dense_update(blocks: Tensor, in_features: int, out_features: int) -> Tensor:
    """Returns ``blockdiag(blocks)[:in, :out].T`` as a dense ``(out, in)`` tensor (same layout as ``W``)."""
    count, block_in, block_out = blocks.shape
    full = blocks.new_zeros(count, block_in, count, block_out)  # (n, bi, n, bo)
    index = torch.arange(count, device=blocks.device)
    full[index, :, index, :] = blocks  # block i sits at rows of chunk i and columns of chunk i
    return full.reshape(count * block_in, count * block_out)[:in_features, :out_features].T  # (out, in)


def effective_weight(weight: Tensor, blocks: Tensor) -> Tensor:
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


def block_gradient(x: Tensor, grad_out: Tensor, blocks: Tensor) -> Tensor:
    """``dL/dA`` of ``x·blockdiag(A)`` given the output gradient, ``(n, bi, bo)``.

    One pass of a compiled kernel over the rows where it is faster (CPU float32/64, divisible shapes with
    ``bi >= bo``), otherwise one batched product.
    """
    count, block_in, block_out = blocks.shape
    x = x.to(grad_out.dtype)
    if kernels_apply(x, grad_out):
        products = block_products(x.contiguous(), grad_out.contiguous(), count)  # None: einsum is faster
        if products is not None:
            return products  # (n, bi, bo)
    xb = to_blocks(x, count, block_in).reshape(-1, count, block_in)  # (M, n, bi)
    gb = to_blocks(grad_out, count, block_out).reshape(-1, count, block_out)  # (M, n, bo)
    if block_in > block_out:
        # The product runs 2-5x faster with the wider block side last (down_proj, k/v: bo < bi).
        return torch.einsum("mno,mni->noi", gb, xb).transpose(1, 2).contiguous()  # (n, bi, bo)
    return torch.einsum("mni,mno->nio", xb, gb)  # (n, bi, bo)


class FusedDiaBlo(torch.autograd.Function):
    """``y = x (W + D)^T + b`` in one product; backward gives the block gradient as one batched product."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, blocks: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight, blocks)
        return F.linear(x, effective_weight(weight, blocks), bias)  # (..., out)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, Tensor | None]:
        x, weight, blocks = ctx.saved_tensors
        grad_x = grad_blocks = None
        if ctx.needs_input_grad[0]:
            effective = effective_weight(weight, blocks).to(grad_out.dtype)  # (out, in)
            grad_x = (grad_out @ effective).to(x.dtype)  # (..., in)
        if ctx.needs_input_grad[3]:
            grad_blocks = block_gradient(x, grad_out, blocks).to(blocks.dtype)  # (n, bi, bo)
        return grad_x, None, None, grad_blocks


def sample_dropped(
    numel: int, p: float, device: torch.device | str = "cpu", chunk: int | None = None
) -> Tensor:
    """Sorted flat positions in ``[0, numel)``, each one in independently with probability ``p``.

    The gaps between successive successes of Bernoulli(p) trials are iid Geometric(p), so summing geometric
    draws walks the positions directly. Draws come in chunks (by default the mean count plus six standard
    deviations, which one chunk covers almost always) until they pass ``numel``. Uses the device's default
    generator, so ``torch.manual_seed`` and checkpoint RNG restoration reproduce the draw.

    Returns:
        int64 tensor of shape ``(K,)``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    chunk = chunk or default_chunk(numel, p)
    if torch.device(device).type == "cpu" and numba_available():
        return draw_positions(numel, p, chunk)  # the same walk in one compiled pass
    return walk_gaps(numel, p, torch.device(device), chunk)


def default_chunk(numel: int, p: float) -> int:
    """Draws per chunk: the mean count of positions plus six standard deviations (nearly always enough)."""
    mean = numel * p
    return int(mean + 6.0 * math.sqrt(mean * (1.0 - p)) + 16)


def walk_gaps(numel: int, p: float, device: torch.device, chunk: int) -> Tensor:
    """``sample_dropped`` in tensor ops (any device): returns the sorted int64 positions, ``(K,)``."""
    log_keep = math.log1p(-p)
    parts, last = [], -1
    while last < numel:
        # Inverse transform: floor(log(u) / log(1-p)) + 1 is Geometric(p) for u uniform on (0, 1].
        # (Faster than Tensor.geometric_, which draws element by element.)
        uniform = 1.0 - torch.rand(chunk, dtype=torch.float64, device=device)  # (chunk,) in (0, 1]
        gaps = torch.floor(torch.log(uniform) / log_keep).to(torch.int64) + 1  # (chunk,) values >= 1
        positions = gaps.cumsum(0) + last  # (chunk,)
        parts.append(positions)
        last = int(positions[-1])
    positions = torch.cat(parts)  # (>= K,) sorted
    return positions[: int(torch.searchsorted(positions, numel))]  # (K,): those below numel


class FusedDroppedDiaBlo(torch.autograd.Function):
    """``y = x W^T + b + drop(x)·blockdiag(A)``; ``dropped`` holds the dropped flat positions of ``x``."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, blocks: Tensor, dropped: Tensor, p: float
    ) -> Tensor:
        scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(x, weight, blocks, dropped)
        ctx.scale = scale
        y = F.linear(x, effective_weight(weight, blocks * scale), bias)  # (..., out)
        if kernels_apply(dropped, x, y, blocks):
            subtract_dropped_output(y, x.contiguous(), dropped, blocks, scale)  # one pass over P, in place
            return y
        count, block_in, block_out = blocks.shape
        features, block_rows = _dropped_coordinates(dropped, x.shape[-1], count, block_in)
        weights = x.reshape(-1).index_select(0, dropped).to(y.dtype).mul_(-scale)  # (K,): -s * x[t, j]
        # Block row t*n + c is a bag of its dropped features; embedding_bag sums weight * A row per bag.
        counts = torch.bincount(block_rows, minlength=y.numel() // y.shape[-1] * count)  # (M*n,)
        offsets = counts.cumsum(0).sub_(counts)  # (M*n,): where each bag starts
        rows_of_a = blocks.reshape(count * block_in, block_out).to(y.dtype)  # (n*bi, bo)
        correction = F.embedding_bag(features, rows_of_a, offsets, mode="sum", per_sample_weights=weights)
        return _add_blocks(y, correction.to(y.dtype), count, block_out)  # (..., out)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, Tensor | None, None, None]:
        x, weight, blocks, dropped = ctx.saved_tensors
        scale = ctx.scale
        want_x, want_blocks = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        grad_x = grad_blocks = None
        if want_x:
            effective = effective_weight(weight, blocks * scale).to(grad_out.dtype)  # (out, in)
            grad_x = grad_out @ effective  # (..., in): as if nothing were dropped
        if kernels_apply(dropped, x, grad_out, blocks):
            grad_out, x = grad_out.contiguous(), x.contiguous()
            if want_blocks:
                grad_blocks = block_gradient(x, grad_out, blocks).mul_(scale).contiguous()  # (n, bi, bo)
            # One pass over P takes the dropped entries' share out of both gradients, in place.
            subtract_dropped_gradients(grad_x, grad_blocks, x, grad_out, dropped, blocks, scale)
            return grad_x, None, None, grad_blocks, None, None
        count, block_in, block_out = blocks.shape
        if want_x:
            features, block_rows = _dropped_coordinates(dropped, x.shape[-1], count, block_in)
            grad_blocked = to_blocks(grad_out, count, block_out).reshape(-1, block_out)  # (M*n, bo)
            grad_at_dropped = grad_blocked.index_select(0, block_rows)  # (K, bo): what each dropped entry fed
            rows_of_a = _rows_of_blocks(blocks, grad_out.dtype, -scale).index_select(0, features)  # (K, bo)
            dropped_grad = rows_of_a.mul_(grad_at_dropped).sum(-1)  # (K,): minus the adapter's share
            grad_x = grad_x.reshape(-1).index_add_(0, dropped, dropped_grad).view_as(grad_x).to(x.dtype)
        if want_blocks:
            # The block gradient wants the dropped input itself: zeroing K entries of a copy of x is cheaper
            # than correcting the product afterwards.
            x_dropped = x.reshape(-1).clone().index_fill_(0, dropped, 0.0).view_as(x)  # (..., in)
            grad_blocks = block_gradient(x_dropped, grad_out, blocks).mul_(scale)  # (n, bi, bo)
            grad_blocks = grad_blocks.to(blocks.dtype)
        return grad_x, None, None, grad_blocks, None, None


def _dropped_coordinates(
    dropped: Tensor, in_features: int, count: int, block_in: int
) -> tuple[Tensor, Tensor]:
    """For flat positions into an ``(M, in)`` input: the feature ``j`` and the block row ``t*n + j//bi``."""
    rows = torch.div(dropped, in_features, rounding_mode="floor")  # (K,)
    features = dropped - rows * in_features  # (K,)
    return features, rows * count + torch.div(features, block_in, rounding_mode="floor")


def _rows_of_blocks(blocks: Tensor, dtype: torch.dtype, factor: float) -> Tensor:
    """``factor * A`` as ``(n*bi, bo)`` rows: row ``j`` is ``A[j//bi, j%bi, :]``, what input ``j`` feeds."""
    count, block_in, block_out = blocks.shape
    return blocks.reshape(count * block_in, block_out).to(dtype) * factor  # (n*bi, bo)


def _add_blocks(y: Tensor, blocks_out: Tensor, count: int, block_out: int) -> Tensor:
    """Adds ``blocks_out`` (M*n, bo), every row's output blocks, to ``y`` (..., out), cropping padding."""
    out_features = y.shape[-1]
    if count * block_out == out_features:
        y.view(-1, block_out).add_(blocks_out)  # (M*n, bo) view of y, in place
        return y
    padded = blocks_out.view(*y.shape[:-1], count * block_out)[..., :out_features]  # (..., out)
    return y.add_(padded)
