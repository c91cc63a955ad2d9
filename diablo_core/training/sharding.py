"""Placing a run's model on the ranks of a World: DDP replicas or FSDP2 shards, and full tensors for saving.

DDP keeps a full copy of the model on every rank and averages the adapter gradients in backward. FSDP
(``torch.distributed.fsdp.fully_shard``) shards every decoder layer and the rest of the model, frozen base
weights and DiaBlo blocks alike, so a model larger than one device trains; each layer's parameters are
gathered for its forward and backward only. Checkpoints hold full tensors either way: rank 0 writes them,
so they load under any world size (or none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel

from diablo_core.methods.diablo.model import diablo_modules
from diablo_core.training.checkpoints import GatheredState
from diablo_core.training.distributed import World

if TYPE_CHECKING:
    from diablo_core.training.run_state import TrainingRun


def place_model(run: TrainingRun, world: World) -> nn.Module:
    """Moves ``run.model`` to the rank's device and wraps it for ``world.strategy``.

    FSDP replaces the parameters, so the optimizer and scheduler are rebuilt over the placed ones and keep
    the state they had (a resumed run's, loaded before placing).

    Returns:
        The module to run forward and backward through (the DDP wrapper, or the sharded model itself).
    """
    optimizer_state, scheduler_state = run.optimizer.state_dict(), run.scheduler.state_dict()
    model = run.model.to(world.device)
    if world.strategy == "fsdp":
        _shard(model, world)
        forward: nn.Module = model
    else:
        on_gpu = world.device.startswith("cuda")
        forward = DistributedDataParallel(
            model, device_ids=[torch.device(world.device)] if on_gpu else None, forward_sync_buffers=False
        )
    run.build_optimizer()
    run.optimizer.load_state_dict(_placed_like(optimizer_state, run.params))
    run.scheduler.load_state_dict(scheduler_state)
    return forward


def _shard(model: nn.Module, world: World) -> None:
    """``fully_shard`` on every decoder layer, then on the root (embeddings, final norm, head)."""
    mesh = init_device_mesh(torch.device(world.device).type, (world.size,))
    for module in diablo_modules(model).values():
        # The fused path's autograd Function keeps the gathered blocks for backward, and FSDP2 then cannot
        # free their storage after forward; the einsum path computes the same function.
        module.fused = False
    for layer in _decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model (its ``_no_split_modules`` classes)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [module for module in model.modules() if type(module).__name__ in names]


def _placed_like(state: dict[str, Any], params: list[nn.Parameter]) -> dict[str, Any]:
    """An optimizer state dict whose per-parameter tensors sit where (and are sharded as) ``params`` are."""
    placed: dict[int, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        param = params[index]
        placed[index] = {name: _like(value, param) for name, value in slots.items()}
    return {"state": placed, "param_groups": state["param_groups"]}


def _like(value: Any, param: nn.Parameter) -> Any:
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value  # AdamW's step counter stays a host scalar
    full = value.full_tensor() if isinstance(value, DTensor) else value
    if isinstance(param, DTensor):
        return distribute_tensor(full.to(param.device), param.device_mesh, param.placements)
    return full.to(param.device)


def gathered_state(run: TrainingRun, world: World) -> GatheredState | None:
    """Full adapter and optimizer tensors of a sharded run, on every rank (a collective); None for DDP.

    A DDP rank already holds full tensors, so rank 0 saves its own.
    """
    if world.strategy != "fsdp":
        return None
    adapter = {f"{path}.blocks": _full(module.blocks) for path, module in diablo_modules(run.model).items()}
    saved = run.optimizer.state_dict()
    state = {
        index: {name: _full(value) for name, value in slots.items()}
        for index, slots in saved["state"].items()
    }
    return GatheredState(adapter, {"state": state, "param_groups": saved["param_groups"]})


def _full(value: Any) -> Any:
    if isinstance(value, DTensor):
        return value.full_tensor().detach().cpu()
    return value
