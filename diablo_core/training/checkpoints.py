"""Training checkpoints: adapter, optimizer, scheduler, RNG states and progress, written atomically.

A checkpoint is a directory ``<output_dir>/checkpoints/step-<n>/`` holding

- ``adapter_config.json`` + ``adapter_model.safetensors`` (``save_adapter``: the directory is an adapter),
- ``optimizer.safetensors`` (per-parameter AdamW tensors) + ``optimizer.json`` (param groups, scalars),
- ``scheduler.json`` (LambdaLR state), ``rng.safetensors`` (torch CPU and CUDA generator states),
- ``trainer_state.json`` (step, epoch, position in the epoch, trained tokens, metrics, Python RNG state).

Nothing is pickled. Files are written into a temporary sibling directory (a name unique per host, process
and call, so workers sharing a folder never collide) that is renamed into place, so a crash never leaves a
half-written ``step-<n>``. The rename and the pruning of old checkpoints go through a ``Fence``: whoever runs
training (a worker holding a job's lease) decides whether it may still make anything visible.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from diablo_core.errors import ConfigError
from diablo_core.methods.adapters import AdapterMethod, method_of
from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from diablo_core.models.identity import BaseModelIdentity

STEP_PREFIX = "step-"
CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
# fence(staging, place): run ``place`` (which makes ``staging`` visible) only if the caller may still write;
# True when it ran. The worker checks its job's lease in the same database transaction.
Fence = Callable[[Path, Callable[[], None]], bool]


def unfenced(staging: Path, place: Callable[[], None]) -> bool:
    """The fence of a run that nobody else can take over (the CLI): always place."""
    place()
    return True


def staging_dir(parent: Path, name: str, tag: str = "") -> Path:
    """A temporary sibling for ``parent/name``, unique per host, process and call (``tag`` adds context)."""
    unique = f"{socket.gethostname()}-{os.getpid()}-{tag}{'-' if tag else ''}{secrets.token_hex(4)}"
    return parent / f".tmp-{name}-{unique}"


def replace_dir(staging: Path, final: Path) -> None:
    """Put ``staging`` at ``final``; an old ``final`` is moved aside first, so the swap is two renames."""
    if final.exists():
        retired = staging_dir(final.parent, final.name, "old")
        os.replace(final, retired)
        shutil.rmtree(retired, ignore_errors=True)
    os.replace(staging, final)


@dataclass
class TrainerState:
    """Where a run stands: enough, with the saved tensors, to continue it exactly.

    Attributes:
        step: Optimizer steps taken.
        epoch: Current epoch (0-based).
        position: Examples of the current epoch's shuffled order already consumed.
        trained_tokens: Non-padding input tokens processed so far.
        history: Metrics recorded so far (one dict per evaluation or logged step).
        fingerprint: Settings that fix the data order and schedule (seed, batch size, example count, total
            steps); resuming with different ones is refused.
        precision: The resolved precision the run trains in (None in checkpoints older than the setting).
        grad_scaler: An fp16 run's gradient-scaler state (scale, growth tracker), None otherwise.
    """

    step: int
    epoch: int
    position: int
    trained_tokens: int
    history: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None
    grad_scaler: dict[str, Any] | None = None


def checkpoints_root(output_dir: Path) -> Path:
    """Where a run writing to ``output_dir`` keeps its ``step-<n>`` checkpoints."""
    return output_dir / CHECKPOINTS_DIR


def checkpoint_step(path: Path) -> int:
    """The step of a ``step-<n>`` checkpoint directory."""
    return int(path.name[len(STEP_PREFIX) :])


def is_resumable(path: Path) -> bool:
    """True when ``path`` is a full training checkpoint, not an adapter-only snapshot."""
    return (path / TRAINER_STATE_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


@dataclass
class GatheredState:
    """Full tensors of a run whose model is sharded across ranks, for rank 0 to write.

    Attributes:
        adapter: ``"<module path>.blocks"`` -> full blocks (as ``adapter_state_dict`` names them).
        optimizer: An optimizer state dict with full per-parameter tensors.
    """

    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


def checkpoint_dirs(root: Path) -> list[Path]:
    """Returns the finished ``step-<n>`` directories under ``root``, oldest step first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)]
    return sorted(found, key=checkpoint_step)


def prune_checkpoints(root: Path, keep: int | None) -> None:
    """Deletes all but the ``keep`` most recent checkpoints (``None`` keeps all)."""
    if keep is None:
        return
    for old in checkpoint_dirs(root)[: max(0, len(checkpoint_dirs(root)) - keep)]:
        shutil.rmtree(old)


def _optimizer_files(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Splits an optimizer state dict into flat tensors and JSON-ready rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Rebuilds an optimizer state dict from ``_optimizer_files`` output."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, slots in meta["scalars"].items():
        state.setdefault(int(index), {}).update(slots)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda.{index}"] = cuda_state
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor], python_state: list[Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    version, internal, gauss = python_state
    random.setstate((version, tuple(internal), gauss))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def save_checkpoint(
    root: Path,
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    state: TrainerState,
    identity: BaseModelIdentity | None = None,
    *,
    keep: int | None = None,
    fence: Fence = unfenced,
    gathered: GatheredState | None = None,
) -> Path | None:
    """Writes ``root/step-<state.step>/`` atomically, prunes to ``keep``, and returns its path.

    Args:
        root: The ``checkpoints`` directory of a run.
        model: Model with DiaBlo applied (its adapter is saved with ``save_adapter``).
        optimizer: The run's optimizer (AdamW over the adapter blocks).
        scheduler: The run's learning-rate scheduler.
        state: Progress of the run at this step.
        identity: Base model identity recorded in the adapter config.
        keep: Keep only this many most recent checkpoints (``None`` keeps all).
        fence: Decides whether the checkpoint may be placed and old ones pruned (see ``Fence``).
        gathered: Full tensors to write instead of the model's and optimizer's own (a sharded run's).

    Returns:
        The final checkpoint directory, or None when the fence refused (nothing visible changed).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{state.step}"
    staging = staging_dir(root, final.name)
    staging.mkdir()
    try:
        _write_files(staging, model, optimizer, scheduler, state, identity, gathered)

        def place() -> None:
            replace_dir(staging, final)
            prune_checkpoints(root, keep)

        placed = fence(staging, place)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already renamed away when placed
    return final if placed else None


def _write_files(
    directory: Path,
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    state: TrainerState,
    identity: BaseModelIdentity | None,
    gathered: GatheredState | None = None,
) -> None:
    adapter = gathered.adapter if gathered else None
    _method(model).save(model, directory, base_model=identity, tensors=adapter)
    tensors, meta = _optimizer_files(gathered.optimizer if gathered else optimizer.state_dict())
    save_file(tensors, str(directory / "optimizer.safetensors"))
    _write_json(directory / "optimizer.json", meta)
    _write_json(directory / "scheduler.json", scheduler.state_dict())
    save_file(_rng_tensors(), str(directory / "rng.safetensors"))
    _write_json(directory / TRAINER_STATE_FILE, {**asdict(state), "python_rng": random.getstate()})


def _method(model: nn.Module) -> AdapterMethod:
    method = method_of(model)
    if method is None:
        raise ConfigError("the model has no adapter to checkpoint", "diablo_not_applied")
    return method


def _check_precision(path: Path, saved: str | None, resuming: str | None) -> None:
    """Refuses to continue in a precision whose steps would compute differently from the saved run's.

    Only resolved precisions are compared ("auto" that picked bf16 continues a "bf16" run); a checkpoint
    older than the setting records none and is accepted.
    """
    if saved is not None and resuming is not None and saved != resuming:
        raise ConfigError(
            f"checkpoint {path} was trained in {saved}, this run trains in {resuming}: the rest of the run "
            f"would not match; resume with precision={saved!r}",
            "checkpoint_precision_mismatch",
        )


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    fingerprint: dict[str, Any],
    precision: str | None = None,
) -> TrainerState:
    """Restores adapter, optimizer, scheduler and RNG states from ``path`` and returns the run's progress.

    Args:
        path: A ``step-<n>`` directory written by ``save_checkpoint``.
        model: Model with DiaBlo applied with the checkpoint's config.
        optimizer: Fresh optimizer over the same parameters, in the same order.
        scheduler: Fresh scheduler of the same kind and length.
        fingerprint: The resuming run's seed/batch/data/total-steps settings.
        precision: The resuming run's resolved precision (None: not checked).

    Raises:
        ConfigError: The checkpoint is missing, belongs to a run with a different fingerprint
            (``checkpoint_mismatch``) or was trained in another precision (``checkpoint_precision_mismatch``).
    """
    if not (path / TRAINER_STATE_FILE).is_file():
        raise ConfigError(
            f"{path} is not a training checkpoint (no {TRAINER_STATE_FILE})", "checkpoint_invalid"
        )
    saved = json.loads((path / TRAINER_STATE_FILE).read_text())
    python_rng = saved.pop("python_rng")
    state = TrainerState(**saved)
    if state.fingerprint != fingerprint:
        raise ConfigError(
            f"checkpoint {path} was made with {state.fingerprint}, this run has {fingerprint}",
            "checkpoint_mismatch",
        )
    _check_precision(path, state.precision, precision)
    _method(model).load(model, path)
    meta = json.loads((path / "optimizer.json").read_text())
    optimizer.load_state_dict(_optimizer_state(load_file(str(path / "optimizer.safetensors")), meta))
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
    _restore_rng(load_file(str(path / "rng.safetensors")), python_rng)
    return state
