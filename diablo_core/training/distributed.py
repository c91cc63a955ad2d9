"""One training run over several processes: the process group, each rank's shard of a batch, reductions.

Every rank holds the same tokenized examples and walks the same shuffled order, so all ranks know each global
batch; rank ``r`` trains on ``batch[r::world]`` only. The summed loss of a shard is divided by the
learned-token count of the GLOBAL batch over the world size, so the gradient average that DDP or FSDP
takes across ranks is the gradient of the mean loss over the global batch: N ranks take the steps one
process takes.

Shards are padded with label-free copies of an example to the same length on every rank, so every rank runs
the same number of forward and backward passes: FSDP gathers parameters in each of them, and a gather is a
collective that every rank must join.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from diablo_core.data.tokenization import IGNORE_INDEX, TokenizedExample
from diablo_core.training.loss import StepStats, accumulate_gradients, count_targets, evaluate_examples

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in a distributed run.

    Attributes:
        rank: Global rank (0 writes files and speaks for the run).
        size: Number of ranks.
        strategy: ``"ddp"`` (replicated model) or ``"fsdp"`` (sharded model).
        device: This rank's device (``cuda:<local rank>`` on GPUs, ``cpu`` otherwise).
        owns_group: ``train`` started the process group and ends it when it returns.
    """

    rank: int
    size: int
    strategy: str
    device: str
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_device(device: str) -> str:
    """The device of this rank: ``cuda`` becomes ``cuda:<local rank>`` under a launcher, others stay."""
    if device.startswith("cuda") and dist.is_torchelastic_launched():
        return f"cuda:{dist.get_node_local_rank(fallback_rank=0)}"
    return device


def join_world(strategy: str, device: str) -> World | None:
    """Joins (or starts) the process group of a launched run; None for a single-process run.

    ``strategy`` ``"auto"`` picks DDP when several ranks run and a single process otherwise; ``"none"`` never
    distributes. A group that is already initialised (by the caller) is used as it is; otherwise one is
    started from the launcher's environment (torchrun), with NCCL on CUDA and gloo on CPU.
    """
    if strategy == "none" or not (dist.is_initialized() or dist.is_torchelastic_launched()):
        return None
    owns = not dist.is_initialized()
    device = rank_device(device)
    if owns:
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if dist.get_world_size() == 1:
        if owns:
            dist.destroy_process_group()
        return None
    chosen = "ddp" if strategy == "auto" else strategy
    return World(dist.get_rank(), dist.get_world_size(), chosen, device, owns)


def leave_world(world: World | None) -> None:
    """Ends the process group if ``join_world`` started it."""
    if world is not None and world.owns_group and dist.is_initialized():
        dist.barrier()  # no rank tears its connections down while a peer still reads from them
        dist.destroy_process_group()


def shard(items: list[T], world: World, filler: T | None = None) -> list[T]:
    """This rank's ``items[rank::size]``, padded with ``filler`` to ``ceil(len / size)`` when given."""
    share = items[world.rank :: world.size]
    if filler is None:
        return share
    return share + [filler] * (math.ceil(len(items) / world.size) - len(share))


def label_free(example: TokenizedExample) -> TokenizedExample:
    """A copy of ``example`` that learns nothing (zero loss and zero gradient): the filler of short shards."""
    return TokenizedExample(list(example.input_ids), [IGNORE_INDEX] * len(example.labels))


def all_sum(values: list[float], device: str) -> list[float]:
    """Sums ``values`` over every rank (float64, so counts stay exact)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)  # (len(values),)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_rank(flag: bool, device: str) -> bool:
    """True on every rank when it is True on any rank (a stop request reaches them all)."""
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a path written, whether a fence allowed it)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def accumulate_shard(
    model: torch.nn.Module,
    batch: list[TokenizedExample],
    micro_batch_size: int,
    pad_token_id: int,
    world: World,
    precision: str = "fp32",
) -> StepStats:
    """Forward and backward of this rank's shard of a global ``batch``; the stats are of the global batch.

    The gradient is summed here and averaged across ranks by DDP or FSDP in backward.
    """
    targets = count_targets(batch)
    denominator = max(1, targets) / world.size
    share = shard(batch, world, filler=label_free(batch[0]))
    local = accumulate_gradients(
        model, share, micro_batch_size, pad_token_id, world.device, precision, denominator=denominator
    )
    loss_sum, correct = all_sum([local.loss * denominator, local.accuracy * denominator], world.device)
    tokens = sum(len(example.input_ids) for example in batch)
    return StepStats(loss_sum / max(1, targets), correct / max(1, targets), targets, tokens)


def evaluate_shard(
    model: torch.nn.Module,
    examples: list[TokenizedExample],
    batch_size: int,
    pad_token_id: int,
    world: World,
    precision: str = "fp32",
) -> dict[str, float]:
    """``evaluate_examples`` over every rank's shard, reduced: the metrics of the whole set."""
    share = shard(examples, world, filler=label_free(examples[0]))
    local = evaluate_examples(model, share, batch_size, pad_token_id, world.device, precision)
    count = local["tokens"]
    loss_sum, correct, total = all_sum(
        [local["loss"] * count, local["accuracy"] * count, count], world.device
    )
    denominator = max(1.0, total)
    return {"loss": loss_sum / denominator, "accuracy": correct / denominator, "tokens": total}
