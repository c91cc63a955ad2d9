"""Exports built once per adapter and exporter version, and kept:
``<exports_dir>/<adapter sha256>/v<EXPORTER_VERSION>/<file>``.

``EXPORTER_VERSION`` goes up whenever a change to the exporter changes what it writes (v2: the GGUF's
``tokenizer.ggml.pre`` is llama.cpp's ``gpt-2``; v1 files said ``gpt2``, which llama.cpp refuses). A cached
file of another version is never served: the next request builds the current one and removes the old.

A build runs in a private staging folder under a per-file lock (an ``flock``, so threads and processes
sharing the data directory build once); the finished file is renamed into place, so readers see either no
file or a whole one. A merged build loads the base model (seconds, hundreds of MiB): callers in an event loop
run ``export_model`` in a worker thread.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from diablo_core.export.archive import write_tar
from diablo_core.export.formats import ExportRequest
from diablo_core.export.gguf_file import check_exportable, write_gguf
from diablo_core.export.merged import save_merged
from diablo_core.methods.adapters import LORA, adapter_method, recorded_quantization
from diablo_core.methods.diablo.adapter_io import CONFIG_FILE, WEIGHTS_FILE
from diablo_core.models.loading import LoadedModel, file_lock, load_base_model
from diablo_core.models.quantization import dequantize_model

# Raised whenever the exporter's output changes, so files cached by an older exporter are rebuilt.
EXPORTER_VERSION = 2


@dataclass(frozen=True)
class ExportSource:
    """An adapter and the base model it applies to (what ``load_base_model`` takes, and its data dir)."""

    adapter_dir: Path
    adapter_sha256: str
    base_model: str
    data_dir: Path

    @property
    def short_name(self) -> str:
        return f"diablo-{self.adapter_sha256[:12]}"

    @property
    def method_name(self) -> str:
        """``"DiaBlo"`` or ``"LoRA"``: whose adapter files the folder holds."""
        return "LoRA" if adapter_method(self.adapter_dir) is LORA else "DiaBlo"


def export_model(source: ExportSource, request: ExportRequest, exports_dir: Path) -> Path:
    """The export's file, built now unless an earlier call built it.

    Raises:
        ExportError: ``export_unsupported`` for a GGUF of an architecture that llama.cpp's loader lacks.
        AdapterError: The adapter is unreadable or belongs to other base weights.
        ModelLoadError: The base model cannot be loaded.
    """
    adapter_folder = exports_dir / source.adapter_sha256
    target = adapter_folder / f"v{EXPORTER_VERSION}" / request.file_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{request.file_name}.lock"):
        if target.is_file():  # built by whoever held the lock before us
            return target
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            os.replace(BUILDERS[request.format](source, request, staging), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _remove_stale(adapter_folder, request.file_name)
    return target


def _remove_stale(adapter_folder: Path, file_name: str) -> None:
    """Deletes ``file_name`` as other exporter versions wrote it (unversioned v1 files included)."""
    current = f"v{EXPORTER_VERSION}"
    stale = [adapter_folder / file_name]  # v1 kept files straight in the adapter's folder
    stale += [folder / file_name for folder in adapter_folder.glob("v*") if folder.name != current]
    for path in stale:
        path.unlink(missing_ok=True)  # a reader streaming it keeps its open file until it is done


def build_adapter(source: ExportSource, request: ExportRequest, staging: Path) -> Path:
    """The adapter's two files in a tar, under the folder ``diablo-<sha256 prefix>``; a LoRA adapter's are
    PEFT's own (``PeftModel.from_pretrained`` loads the folder)."""
    del request
    names = (CONFIG_FILE, WEIGHTS_FILE)
    return write_tar(source.adapter_dir, staging / "adapter.tar", source.short_name, names)


def build_merged(source: ExportSource, request: ExportRequest, staging: Path) -> Path:
    """The merged Hugging Face checkpoint in a tar, under the folder ``diablo-<sha256 prefix>``."""
    del request
    base = _load_base(source)
    checkpoint = save_merged(base, source.adapter_dir, staging / "merged", source.adapter_sha256)
    return write_tar(checkpoint, staging / "merged.tar", source.short_name)


def build_gguf(source: ExportSource, request: ExportRequest, staging: Path) -> Path:
    """One GGUF file of the merged model; the architecture is checked before anything is merged."""
    base = _load_base(source)
    check_exportable(base.model.config)
    name = f"{base.identity.name} + {source.short_name}"
    merged = f"the base model merged with a {source.method_name} adapter"
    description = f"{name}: {merged}. {base.identity.source}".strip()
    checkpoint = save_merged(base, source.adapter_dir, staging / "merged", source.adapter_sha256)
    target = staging / request.file_name
    return write_gguf(checkpoint, target, request.gguf_type, name, description)


def _load_base(source: ExportSource) -> LoadedModel:
    """The base model in float32 on the CPU: the merge is float32, as the service computes.

    An adapter trained on a quantized base (QLoRA-style: NF4 or int8) is merged into the weights it was
    trained against: the base is loaded with that quantization and every packed linear replaced by a plain
    float32 ``nn.Linear`` holding the weight it computes with (``dequantize_model``). The checkpoint is
    then written in full precision; its identity (and model card) still name the quantization.
    """
    quantization = recorded_quantization(source.adapter_dir)
    base = load_base_model(
        source.base_model,
        data_dir=source.data_dir,
        device="cpu",
        dtype=torch.float32,
        quantization=quantization,
    )
    if quantization is not None:
        dequantize_model(base.model)
    return base


BUILDERS: dict[str, Callable[[ExportSource, ExportRequest, Path], Path]] = {
    "adapter": build_adapter,
    "merged": build_merged,
    "gguf": build_gguf,
}
