"""Which torch device to run on, from a setting: ``auto`` | ``cpu`` | ``cuda[:index]``.

Training (the worker) and serving (the API's inference engine) resolve the same setting here. Torch is
imported inside the function, so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this machine."""


@dataclass(frozen=True)
class Device:
    """A resolved device: its torch name and how a job's events or the logs describe it."""

    name: str
    description: str

    @property
    def is_cuda(self) -> bool:
        """True for a CUDA device (bf16 weights)."""
        return self.name.startswith("cuda")


def resolve_device(setting: str, *, setting_name: str = "DIABLO_DEVICE") -> Device:
    """Resolve ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``/``cuda:N``.

    Raises:
        DeviceUnavailable: If CUDA is asked for but not available.
        ValueError: If ``setting`` names another kind of device.
    """
    import torch  # here, not at the top: this module is imported where torch must not load yet

    setting = setting.strip().lower()
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cpu":
        return Device("cpu", "cpu")
    if setting == "cuda" or setting.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"{setting_name}={setting} but CUDA is not available on this machine")
        index = torch.device(setting).index or 0
        return Device(f"cuda:{index}", f"cuda ({torch.cuda.get_device_name(index)})")
    raise ValueError(f"{setting_name} must be auto, cpu or cuda[:N], got {setting!r}")


def release_device_memory(device: Device | None) -> None:
    """Return cached CUDA memory after a job, so the next one starts from a clean device."""
    if device is not None and device.is_cuda:
        import torch

        torch.cuda.empty_cache()
