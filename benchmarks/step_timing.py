"""Interleaved step timing: several contestants share one process and take turns, one step each per round.

Background load on a shared machine drifts over seconds to minutes. Running the contestants one after the
other gives each a different load; taking turns within a round gives every contestant of a round nearly the
same load, so per-round ratios cancel most of it. Each step records wall time and process CPU time
(``time.process_time`` sums all threads of this process; with one thread it barely depends on other
processes). On CUDA the wall time comes from CUDA events around the step, after ``torch.cuda.synchronize``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

Samples = dict[str, dict[str, list[float]]]


def time_step(step: Callable[[], None], device: str) -> tuple[float, float]:
    """Runs ``step`` once and returns ``(wall seconds, process CPU seconds)``."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if cuda:
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000, time.process_time() - cpu
    return time.perf_counter() - wall, time.process_time() - cpu


def round_order(names: list[str], round_index: int) -> list[str]:
    """The turn order of one round: ``names`` rotated by the round index, so no contestant always goes first
    or always follows the same other one."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def interleave(
    steps: dict[str, Callable[[], None]], rounds: int, warmup: int, device: str, log: bool = True
) -> Samples:
    """Runs ``warmup`` untimed then ``rounds`` timed rounds of one step per contestant.

    Returns:
        ``{name: {"wall": [...], "cpu": [...]}}`` with one entry per timed round, in round order.
    """
    names = list(steps)
    samples: Samples = {name: {"wall": [], "cpu": []} for name in names}
    for index in range(warmup + rounds):
        for name in round_order(names, index):
            wall, cpu = time_step(steps[name], device)
            if index >= warmup:
                samples[name]["wall"].append(wall)
                samples[name]["cpu"].append(cpu)
            if log:
                label = f"round {index - warmup}" if index >= warmup else f"warm-up {index}"
                print(f"{label}: {name} wall {wall:.3f}s cpu {cpu:.3f}s", file=sys.stderr, flush=True)
    return samples


def ratio_medians(samples: Samples, pairs: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """For each ``(a, b)`` pair present: the median over rounds of ``a``'s step time / ``b``'s that round.

    Returns:
        ``{"a/b": {"wall": ..., "cpu": ...}}``.
    """
    ratios = {}
    for a, b in pairs:
        if a not in samples or b not in samples:
            continue
        ratios[f"{a}/{b}"] = {
            kind: statistics.median(x / y for x, y in zip(samples[a][kind], samples[b][kind], strict=True))
            for kind in ("wall", "cpu")
        }
    return ratios
