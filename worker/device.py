"""Which torch device a worker trains on: ``DIABLO_DEVICE`` = auto | cpu | cuda[:index]."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this machine."""


@dataclass(frozen=True)
class TrainingDevice:
    """A resolved device: its torch name and how the job's events describe it."""

    name: str
    description: str

    @property
    def is_cuda(self) -> bool:
        """True for a CUDA device (bf16 weights)."""
        return self.name.startswith("cuda")


def resolve_device(setting: str) -> TrainingDevice:
    """Resolve ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``/``cuda:N``.

    Raises:
        DeviceUnavailable: If CUDA is asked for but not available.
        ValueError: If ``setting`` names another kind of device.
    """
    setting = setting.strip().lower()
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cpu":
        return TrainingDevice("cpu", "cpu")
    if setting == "cuda" or setting.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"DIABLO_DEVICE={setting} but CUDA is not available on this worker")
        index = torch.device(setting).index or 0
        return TrainingDevice(f"cuda:{index}", f"cuda ({torch.cuda.get_device_name(index)})")
    raise ValueError(f"DIABLO_DEVICE must be auto, cpu or cuda[:N], got {setting!r}")


def release_device_memory(device: TrainingDevice | None) -> None:
    """Return cached CUDA memory after a job, so the next job starts from a clean device."""
    if device is not None and device.is_cuda:
        torch.cuda.empty_cache()
