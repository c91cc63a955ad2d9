"""Device resolution, shared by training and serving, and light to import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diablo_core.devices import Device, DeviceUnavailable, release_device_memory, resolve_device

ROOT = Path(__file__).resolve().parents[2]


def test_settings_resolve_to_a_torch_device_name() -> None:
    assert resolve_device(" CPU ") == Device("cpu", "cpu")
    assert resolve_device("auto").name == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="DIABLO_DEVICE must be auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailable, match="DIABLO_DEVICE=cuda:1 but CUDA is not available"):
            resolve_device("cuda:1")
    release_device_memory(Device("cpu", "cpu"))  # nothing to release on the CPU
    release_device_memory(None)


def test_the_torch_free_core_modules_import_without_torch() -> None:
    code = (
        "import sys, diablo_core.devices, diablo_core.file_lock\n"
        "sys.exit(', '.join(m for m in ('torch', 'transformers') if m in sys.modules) or None)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
