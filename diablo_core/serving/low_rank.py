"""LoRA adapters in a shared layer's slots: stacked ``A`` and ``B`` per rank, each row its own pair.

A LoRA row's update is ``x A^T B^T * scaling``; the scaling is folded into ``B`` when it is installed, so the
forward is two gathered products. Adapters of different ranks keep separate stacks (like DiaBlo's block
shapes); a slot is zero in every stack its adapter does not use, so gathering it adds nothing.
"""

from __future__ import annotations

import torch


class LowRankStacks:
    """Per rank ``r``: ``down`` ``(K, r, in)`` (LoRA's A) and ``up`` ``(K, out, r)`` (B times the scaling)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        self.in_features, self.out_features = in_features, out_features
        self.down: dict[int, torch.Tensor] = {}  # rank -> (K, r, in)
        self.up: dict[int, torch.Tensor] = {}  # rank -> (K, out, r)
        self.occupied: dict[int, set[int]] = {}  # rank -> slots holding a non-zero pair
        self.capacity = 1

    def reserve(self, capacity: int) -> None:
        """Grows every stack to ``capacity`` slots (new slots are zero)."""
        if capacity <= self.capacity:
            return
        for stacks in (self.down, self.up):
            for rank, stack in stacks.items():
                grown = stack.new_zeros((capacity, *stack.shape[1:]))
                grown[: stack.shape[0]] = stack
                stacks[rank] = grown
        self.capacity = capacity

    def set_slot(
        self, slot: int, down: torch.Tensor, up: torch.Tensor, *, device: torch.device, dtype: torch.dtype
    ) -> None:
        """Stores ``down`` ``(r, in)`` and ``up`` ``(out, r)`` (scaling already folded in) in ``slot``."""
        rank = down.shape[0]
        if rank not in self.down:
            self.down[rank] = torch.zeros((self.capacity, rank, self.in_features), device=device, dtype=dtype)
            self.up[rank] = torch.zeros((self.capacity, self.out_features, rank), device=device, dtype=dtype)
            self.occupied[rank] = set()
        self.down[rank][slot] = down.to(device=device, dtype=dtype)
        self.up[rank][slot] = up.to(device=device, dtype=dtype)
        self.occupied[rank].add(slot)

    def clear_slot(self, slot: int) -> None:
        for rank, slots in self.occupied.items():
            if slot in slots:
                self.down[rank][slot].zero_()
                self.up[rank][slot].zero_()
                slots.discard(slot)

    def add_updates(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        row_slots: torch.Tensor,
        active: frozenset[int],
        uniform: int | None,
    ) -> None:
        """Adds each row's ``x A^T B^T`` into ``y`` ``(B, T, out)`` in place; ``x`` is ``(B, T, in)``."""
        for rank, slots in self.occupied.items():
            if uniform is not None:
                if uniform in slots:
                    down, up = self.down[rank][uniform], self.up[rank][uniform]  # (r, in), (out, r)
                    y.add_(x.matmul(down.T).matmul(up.T))  # (B, T, out)
            elif not active.isdisjoint(slots):
                down = self.down[rank].index_select(0, row_slots)  # (B, r, in)
                up = self.up[rank].index_select(0, row_slots)  # (B, out, r)
                hidden = torch.bmm(x, down.transpose(1, 2))  # (B, T, r)
                y.add_(torch.bmm(hidden, up.transpose(1, 2)))  # (B, T, out)
