"""Many DiaBlo adapters served at once from ONE shared base model, without merging any of them.

Each adapted ``nn.Linear`` of the shared model is replaced (lazily, the first time an adapter targets it)
by a :class:`MultiAdapterLinear` that keeps the frozen layer and, per distinct block shape ``(n, bi, bo)``,
a stacked tensor ``(K, n, bi, bo)`` of every resident adapter's blocks. Adapters occupy global slot
indices ``1..K-1``; slot 0 is the base model and always stays zero. Before each forward the caller sets one
slot per batch row (:meth:`MultiAdapterModel.route`); every layer then computes the frozen ``x W^T + b``
once for the whole batch and adds each row's own block product, gathered from the stack by slot.

LoRA adapters sit in the same slots: each layer also keeps stacked ``A``/``B`` pairs per rank
(``serving.low_rank``), so one batch mixes DiaBlo rows, LoRA rows and base rows, with one frozen product.

Adapters with different ``N`` or targets share the design: a layer keeps one stack per block shape, and
a slot is zero in every stack (and every layer) its adapter does not use, so gathering it adds nothing.
Forwards through a routed model must be serialised (the inference engine is the only caller).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from diablo_core.errors import ConfigError
from diablo_core.methods.diablo.layer import dense_update
from diablo_core.models.quantization import compute_dtype_of, quantization_of
from diablo_core.serving.low_rank import LowRankStacks

BlockShape = tuple[int, int, int]
LowRankPair = tuple[torch.Tensor, torch.Tensor]  # LoRA's A (r, in) and B * scaling (out, r)


@dataclass
class AdapterRouting:
    """Per-forward routing shared by every MultiAdapterLinear of one model.

    Attributes:
        row_slots: ``(B,)`` long tensor, the adapter slot of each batch row (0 = base model).
        active: The non-zero slots present in the batch (empty: the adapter branch is skipped).
        uniform: The slot when every row uses the same non-zero slot (no gather is needed), else None.
    """

    row_slots: torch.Tensor | None = None
    active: frozenset[int] = field(default_factory=frozenset)
    uniform: int | None = None


def _split_blocks(x: torch.Tensor, count: int, block_in: int) -> torch.Tensor:
    """``(B, T, in)`` zero-padded on the right to ``count * bi`` and viewed as ``(B, T, n, bi)``."""
    pad = count * block_in - x.shape[-1]
    return (F.pad(x, (0, pad)) if pad else x).unflatten(-1, (count, block_in))  # (B, T, n, bi)


def _gathered_blocks(x: torch.Tensor, stack: torch.Tensor, row_slots: torch.Tensor) -> torch.Tensor:
    """Block outputs ``(B*T, n, bo)`` of each row's own slot in ``stack`` ``(K, n, bi, bo)``."""
    _, count, block_in, block_out = stack.shape
    xb = _split_blocks(x, count, block_in)  # (B, T, n, bi)
    blocks = stack.index_select(0, row_slots)  # (B, n, bi, bo)
    if xb.shape[1] == 1:  # decode: a broadcast multiply-sum beats B*n tiny matrix products
        yb = (xb.squeeze(1).unsqueeze(-1) * blocks).sum(-2)  # (B, n, bo)
    else:
        yb = torch.einsum("btni,bnio->btno", xb, blocks)  # (B, T, n, bo)
    return yb.reshape(-1, count, block_out)  # (B*T, n, bo)


def _single_blocks(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Block outputs ``(B*T, n, bo)`` when every row uses the same ``(n, bi, bo)`` blocks."""
    count, block_in, _ = blocks.shape
    xb = _split_blocks(x, count, block_in).reshape(-1, count, block_in).transpose(0, 1)  # (n, B*T, bi)
    return torch.bmm(xb, blocks).transpose(0, 1)  # (B*T, n, bo); bmm beats einsum's dispatch on tiny blocks


def _add_block_output(y: torch.Tensor, yb: torch.Tensor) -> None:
    """Adds block outputs ``(B*T, n, bo)`` into ``y`` ``(B, T, out)`` in place, cropping to ``out``."""
    count, block_out = yb.shape[-2:]
    if count * block_out == y.shape[-1]:
        y.view(-1, count, block_out).add_(yb)  # (B*T, n, bo) view of y: no crop, no copy
    else:
        y.add_(yb.reshape(*y.shape[:-1], count * block_out)[..., : y.shape[-1]])


def gathered_block_update(
    x: torch.Tensor, stack: torch.Tensor, row_slots: torch.Tensor, out: int
) -> torch.Tensor:
    """Each row's adapter branch ``x_b · blockdiag(stack[slot_b])[:in, :out]`` as one batched product.

    Args:
        x: Input ``(B, T, in)``.
        stack: Blocks of every slot ``(K, n, bi, bo)``.
        row_slots: ``(B,)`` slot per row.
        out: Output features the result is cropped to.

    Returns:
        ``(B, T, out)``.
    """
    y = x.new_zeros(*x.shape[:-1], out)  # (B, T, out)
    _add_block_output(y, _gathered_blocks(x, stack, row_slots))
    return y


def single_block_update(x: torch.Tensor, blocks: torch.Tensor, out: int) -> torch.Tensor:
    """The branch for a batch whose rows all use one adapter: ``(B, T, in)`` with ``(n, bi, bo)`` blocks."""
    y = x.new_zeros(*x.shape[:-1], out)  # (B, T, out)
    _add_block_output(y, _single_blocks(x, blocks))
    return y


class MultiAdapterLinear(nn.Module):
    """A frozen shared ``nn.Linear`` plus the blocks of every resident adapter, selected per batch row.

    The stacks are plain tensors, not parameters or buffers, so the model's state dict (and therefore its
    base identity) is only the frozen layer's. A quantized base (NF4/int8) computes its own product; the
    stacks are then in its compute dtype.
    """

    def __init__(self, base: nn.Linear, routing: AdapterRouting) -> None:
        super().__init__()
        self.base = base
        self.routing = routing
        self.stacks: dict[BlockShape, torch.Tensor] = {}  # shape -> (K, n, bi, bo)
        self.occupied: dict[BlockShape, set[int]] = {}  # shape -> slots holding non-zero blocks
        self.capacity = 1  # K: every stack has this many slots, so any routed slot can be gathered
        self.low_rank = LowRankStacks(base.in_features, base.out_features)

    def extra_repr(self) -> str:
        base = self.base
        return f"in_features={base.in_features}, out_features={base.out_features}, shapes={list(self.stacks)}"

    @property
    def quantization(self) -> str | None:
        return quantization_of(self.base)

    def reserve(self, capacity: int) -> None:
        """Grows every stack to at least ``capacity`` slots (new slots are zero)."""
        if capacity <= self.capacity:
            return
        for shape, stack in self.stacks.items():
            grown = stack.new_zeros((capacity, *shape))  # (K, n, bi, bo)
            grown[: stack.shape[0]] = stack
            self.stacks[shape] = grown
        self.low_rank.reserve(capacity)
        self.capacity = capacity

    def set_slot(self, slot: int, blocks: torch.Tensor) -> None:
        """Stores ``blocks`` ``(n, bi, bo)`` in ``slot`` (< capacity) of its shape's stack."""
        device, dtype = self.base.weight.device, compute_dtype_of(self.base)
        shape: BlockShape = tuple(blocks.shape)
        if shape not in self.stacks:
            # (K, n, bi, bo); slot 0 stays 0
            self.stacks[shape] = torch.zeros((self.capacity, *shape), device=device, dtype=dtype)
            self.occupied[shape] = set()
        self.stacks[shape][slot] = blocks.to(device=device, dtype=dtype)
        self.occupied[shape].add(slot)

    def set_low_rank(self, slot: int, pair: LowRankPair) -> None:
        """Stores a LoRA pair (A ``(r, in)``, B * scaling ``(out, r)``) in ``slot`` (< capacity)."""
        down, up = pair
        self.low_rank.set_slot(
            slot, down, up, device=self.base.weight.device, dtype=compute_dtype_of(self.base)
        )

    def clear_slot(self, slot: int) -> None:
        """Zeroes ``slot`` in every stack, so that rows routed to it get no update here."""
        self.low_rank.clear_slot(slot)
        for shape, slots in self.occupied.items():
            if slot in slots:
                self.stacks[shape][slot].zero_()
                slots.discard(slot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base
        # (B, T, out): the frozen product, once for the whole batch
        y = F.linear(x, base.weight, base.bias) if self.quantization is None else base(x)
        routing = self.routing
        if not routing.active:
            return y
        for shape, stack in self.stacks.items():
            slots = self.occupied[shape]
            if routing.uniform is not None:
                if routing.uniform in slots:
                    _add_block_output(y, _single_blocks(x, stack[routing.uniform]))
            elif not routing.active.isdisjoint(slots):
                _add_block_output(y, _gathered_blocks(x, stack, routing.row_slots))
        self.low_rank.add_updates(y, x, routing.row_slots, routing.active, routing.uniform)
        return y


def _parent_and_name(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, name = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), name


class MultiAdapterModel:
    """Routes the rows of each forward of a shared base model to their own adapters' blocks.

    Args:
        model: The shared base model; its adapted linear layers are replaced in place (lazily) by
            :class:`MultiAdapterLinear`. Its weights are never modified.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.routing = AdapterRouting()
        self.layers: dict[str, MultiAdapterLinear] = {}  # module path -> wrapped layer
        self.capacity = 1  # slots per stack, the same in every layer

    def linear(self, path: str) -> nn.Linear | None:
        """The frozen linear layer at module ``path`` (wrapped or not), or None when there is none."""
        if path in self.layers:
            return self.layers[path].base
        try:
            module = self.model.get_submodule(path)
        except AttributeError:
            return None
        return module if isinstance(module, nn.Linear) else None

    def _wrap(self, path: str) -> MultiAdapterLinear:
        if path not in self.layers:
            parent, name = _parent_and_name(self.model, path)
            wrapped = MultiAdapterLinear(getattr(parent, name), self.routing)
            wrapped.reserve(self.capacity)
            # Registered before it replaces the layer: the loader thread's ``linear(path)`` must never see
            # the wrapper in the model while ``layers`` does not yet know it (it would answer None).
            self.layers[path] = wrapped
            setattr(parent, name, wrapped)
        return self.layers[path]

    @torch.no_grad()
    def set_slot(
        self,
        slot: int,
        blocks_by_path: Mapping[str, torch.Tensor],
        low_rank_by_path: Mapping[str, LowRankPair] | None = None,
    ) -> None:
        """Installs one adapter's blocks (module path -> ``(n, bi, bo)``), or LoRA pairs (module path ->
        (A, B * scaling)), into ``slot`` (>= 1).

        The caller validates the shapes (see ``adapter_cache.validate_adapter``); layers the adapter does
        not name keep zeros in this slot.
        """
        if slot < 1:
            raise ValueError(f"slot must be >= 1 (slot 0 is the base model), got {slot}")
        self.clear_slot(slot)
        self.capacity = max(self.capacity, slot + 1)
        for layer in self.layers.values():
            layer.reserve(self.capacity)
        for path, blocks in blocks_by_path.items():
            self._wrap(path).set_slot(slot, blocks)
        for path, pair in (low_rank_by_path or {}).items():
            self._wrap(path).set_low_rank(slot, pair)

    @torch.no_grad()
    def clear_slot(self, slot: int) -> None:
        """Removes whatever adapter occupies ``slot``: rows routed to it then get the base model."""
        for layer in self.layers.values():
            layer.clear_slot(slot)

    @contextmanager
    def route(self, row_slots: Sequence[int]) -> Iterator[None]:
        """Routes batch row ``b`` of the forwards run inside the block to adapter slot ``row_slots[b]``."""
        device = next(self.model.parameters()).device
        active = frozenset(slot for slot in row_slots if slot)
        routing = self.routing
        routing.row_slots = torch.tensor(list(row_slots), dtype=torch.long, device=device)  # (B,)
        routing.active = active
        routing.uniform = next(iter(active)) if len(active) == 1 and 0 not in row_slots else None
        try:
            yield
        finally:
            routing.row_slots, routing.active, routing.uniform = None, frozenset(), None


@torch.no_grad()
def merge_blocks(
    model: nn.Module,
    blocks_by_path: Mapping[str, torch.Tensor],
    low_rank_by_path: Mapping[str, LowRankPair] | None = None,
) -> None:
    """Adds each adapter block tensor's dense update (or LoRA pair's ``B A``) into its plain ``nn.Linear``
    weight, in place.

    For a deployment that serves one adapter only: afterwards the model costs exactly the base model.

    Raises:
        ConfigError: ``merge_into_quantized_base`` when a layer is quantized (nothing is merged then).
    """
    low_rank_by_path = low_rank_by_path or {}
    paths = [*blocks_by_path, *low_rank_by_path]
    quantized = sorted(path for path in paths if quantization_of(model.get_submodule(path)))
    if quantized:
        raise ConfigError(
            f"cannot merge an adapter into {len(quantized)} quantized base layers ({quantized[0]}, ...): "
            "serve it unmerged (multi-adapter) or on a full-precision base",
            code="merge_into_quantized_base",
        )
    for path, blocks in blocks_by_path.items():
        linear = model.get_submodule(path)
        weight = linear.weight
        blocks = blocks.to(device=weight.device, dtype=weight.dtype)
        weight += dense_update(blocks, linear.in_features, linear.out_features)  # (out, in)
    for path, (down, up) in low_rank_by_path.items():
        weight = model.get_submodule(path).weight
        weight += (up.to(torch.float32) @ down.to(torch.float32)).to(weight.dtype)  # (out, r) @ (r, in)
