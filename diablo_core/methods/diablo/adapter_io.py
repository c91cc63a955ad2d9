"""Saving and loading DiaBlo adapters: adapter_config.json + adapter_model.safetensors (never pickles)."""

from __future__ import annotations

import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from diablo_core.errors import AdapterError, ConfigError
from diablo_core.methods.diablo.config import CONFIG_FILE, WEIGHTS_FILE, DiaBloConfig
from diablo_core.methods.diablo.model import (
    adapter_state_dict,
    apply_diablo,
    diablo_modules,
    get_diablo_config,
    load_adapter_state_dict,
    unload_diablo,
)
from diablo_core.models.identity import BaseModelIdentity, model_identity
from diablo_core.models.quantization_names import QUANTIZATIONS

FORMAT_VERSION = 1
_CONFIG_FIELDS = ("num_blocks", "target_modules", "dropout", "layers")
_DOCUMENT_KEYS = {"method", "format_version", *_CONFIG_FIELDS, "base_model", "modules", "dtype", "library"}


def _library_version() -> str:
    try:
        return metadata.version("diablo-service")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _write_atomic(directory: Path, name: str, write: Any) -> Path:
    """Writes via a temp file in ``directory``, then renames it over ``name`` (readers never see halves)."""
    handle, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, directory / name)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return directory / name


def _build_config(model: nn.Module, config: DiaBloConfig, identity: BaseModelIdentity) -> dict[str, Any]:
    modules = diablo_modules(model)
    dtypes = {str(module.blocks.dtype).removeprefix("torch.") for module in modules.values()}
    return {
        "method": "diablo",
        "format_version": FORMAT_VERSION,
        **config.to_dict(),
        "base_model": {**identity.to_dict(), "quantization": identity.quantization},
        "modules": {
            path: {
                "shape": list(module.blocks.shape),
                "in_features": module.in_features,
                "out_features": module.out_features,
            }
            for path, module in modules.items()
        },
        "dtype": dtypes.pop() if len(dtypes) == 1 else sorted(dtypes),
        "library": {"name": "diablo-service", "version": _library_version()},
    }


def save_adapter(
    model: nn.Module,
    directory: str | Path,
    base_model: BaseModelIdentity | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Writes the model's adapter to ``directory`` (created if needed), each file atomically.

    Args:
        model: A model with DiaBlo applied (merged or not: the blocks are saved either way).
        directory: Target directory.
        base_model: Identity to record; defaults to ``model_identity(model)``.
        tensors: The blocks to write instead of the model's own, named as ``adapter_state_dict`` names them
            (a model sharded across processes holds only its part; rank 0 writes the gathered whole).

    Returns:
        The directory.

    Raises:
        AdapterError: ``adapter_not_found`` when the model has no DiaBlo layers.
    """
    config = get_diablo_config(model)
    if config is None or not diablo_modules(model):
        raise AdapterError(
            "the model has no DiaBlo adapter to save (apply_diablo first)", "adapter_not_found"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    identity = base_model or model_identity(model)
    source = adapter_state_dict(model) if tensors is None else tensors
    tensors = {key: value.to("cpu").contiguous().clone() for key, value in source.items()}
    document = json.dumps(_build_config(model, config, identity), indent=2) + "\n"
    _write_atomic(directory, WEIGHTS_FILE, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    _write_atomic(directory, CONFIG_FILE, lambda path: Path(path).write_text(document))
    return directory


def _invalid(directory: Path, message: str) -> AdapterError:
    return AdapterError(f"{directory / CONFIG_FILE}: {message}", "adapter_config_invalid")


def _check_document(directory: Path, data: Any) -> None:
    if not isinstance(data, dict):
        raise _invalid(directory, "must hold a JSON object")
    if data.get("method") != "diablo":
        raise _invalid(directory, f'"method" must be "diablo", got {data.get("method")!r}')
    if data.get("format_version") != FORMAT_VERSION:
        raise _invalid(
            directory, f'"format_version" must be {FORMAT_VERSION}, got {data.get("format_version")!r}'
        )
    unknown = sorted(set(data) - _DOCUMENT_KEYS)
    if unknown:
        raise _invalid(directory, f"unknown key(s) {unknown}")
    base = data.get("base_model")
    if not isinstance(base, dict) or not all(
        isinstance(base.get(key), str) for key in ("name", "content_hash")
    ):
        raise _invalid(directory, '"base_model" must be {"name": str, "content_hash": str}')
    if base.get("quantization") not in (None, *QUANTIZATIONS):
        raise _invalid(directory, f'"base_model.quantization" must be one of {list(QUANTIZATIONS)} or null')
    modules = data.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise _invalid(
            directory, '"modules" must map module paths to {"shape", "in_features", "out_features"}'
        )
    for path, entry in modules.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) for v in shape)):
            raise _invalid(directory, f'modules["{path}"].shape must be [n, block_in, block_out]')


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """Reads and validates ``adapter_config.json``.

    Raises:
        AdapterError: ``adapter_not_found`` (no such directory or file) or ``adapter_config_invalid``.
    """
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise AdapterError(
            f"{directory} holds no adapter ({CONFIG_FILE} + {WEIGHTS_FILE})", "adapter_not_found"
        )
    try:
        data = json.loads((directory / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _invalid(directory, f"not valid JSON ({error})") from error
    _check_document(directory, data)
    try:
        DiaBloConfig.from_dict({key: data[key] for key in _CONFIG_FIELDS if key in data})
    except (TypeError, ValueError) as error:
        raise _invalid(directory, str(error)) from error
    return data


def adapter_config_from(data: dict[str, Any]) -> DiaBloConfig:
    """The DiaBloConfig recorded in an adapter config document (from read_adapter_config)."""
    return DiaBloConfig.from_dict({key: data[key] for key in _CONFIG_FIELDS if key in data})


def load_adapter_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """Reads the adapter tensors (CPU) and checks them against the config's module list and shapes.

    Raises:
        AdapterError: ``adapter_not_found``, ``adapter_config_invalid`` (unreadable file),
            ``adapter_missing_tensor``, ``adapter_extra_tensor`` or ``adapter_shape_mismatch``.
    """
    directory = Path(directory)
    expected = {
        f"{path}.blocks": entry["shape"] for path, entry in read_adapter_config(directory)["modules"].items()
    }
    try:
        tensors = load_file(directory / WEIGHTS_FILE, device="cpu")
    except (SafetensorError, OSError) as error:
        raise AdapterError(
            f"{directory / WEIGHTS_FILE}: unreadable ({error})", "adapter_config_invalid"
        ) from error
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise AdapterError(f"{directory / WEIGHTS_FILE} lacks tensors {missing}", "adapter_missing_tensor")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise AdapterError(f"{directory / WEIGHTS_FILE} has unlisted tensors {extra}", "adapter_extra_tensor")
    for key, shape in expected.items():
        if list(tensors[key].shape) != shape:
            raise AdapterError(
                f"{key}: stored shape {list(tensors[key].shape)} != config shape {shape}",
                "adapter_shape_mismatch",
            )
    return tensors


def check_base(
    expected: dict[str, Any], actual: BaseModelIdentity, allow_quantization_mismatch: bool
) -> None:
    """Refuses a base whose content hash, or (unless allowed) quantization, differs from the recorded one.

    Args:
        expected: The ``base_model`` entry of an adapter config (a missing ``quantization`` is None).
        actual: The identity of the base the adapter is about to run on.
        allow_quantization_mismatch: Accept the same weights stored differently, e.g. an adapter trained on
            the NF4 base served on the full-precision one (the blocks then meet slightly different weights;
            docs/quantization.md says how far answers move).

    Raises:
        AdapterError: ``adapter_base_mismatch`` or ``adapter_quantization_mismatch``.
    """
    if actual.content_hash != expected["content_hash"]:
        raise AdapterError(
            f"adapter was trained on base model {expected['name']!r} ({expected['content_hash']}), "
            f"but this model is {actual.name!r} ({actual.content_hash})",
            "adapter_base_mismatch",
        )
    check_quantization_match(expected, actual, allow_quantization_mismatch)


def check_quantization_match(
    expected: dict[str, Any], actual: BaseModelIdentity, allow_quantization_mismatch: bool
) -> None:
    """Refuses, unless allowed, a base stored with another quantization than the recorded one.

    Raises:
        AdapterError: ``adapter_quantization_mismatch``.
    """
    trained_on = expected.get("quantization")
    if trained_on != actual.quantization and not allow_quantization_mismatch:
        raise AdapterError(
            f"adapter was trained on the {_stored_as(trained_on)} base of {expected['name']!r}, but this "
            f"model is its {_stored_as(actual.quantization)} base; load the base with quantization="
            f"{trained_on!r}, or allow the mismatch explicitly (allow_quantization_mismatch=True)",
            "adapter_quantization_mismatch",
        )


def _stored_as(quantization: str | None) -> str:
    return quantization or "full-precision"


def load_adapter(
    model: nn.Module, directory: str | Path, *, allow_quantization_mismatch: bool = False
) -> DiaBloConfig:
    """Loads an adapter into ``model``, applying DiaBlo first when the model is plain.

    Everything is validated before the model changes: the config, the base model's content hash and
    quantization, the tensors. A model that already has DiaBlo applied must have the same blocks, targets
    and layers.

    Args:
        model: The base model (plain or with DiaBlo applied).
        directory: The adapter directory.
        allow_quantization_mismatch: Load onto the same base weights stored with another quantization
            (see ``check_base``).

    Returns:
        The adapter's config.

    Raises:
        AdapterError: ``adapter_not_found``, ``adapter_config_invalid``, ``adapter_base_mismatch``,
            ``adapter_quantization_mismatch``, ``adapter_missing_tensor``, ``adapter_extra_tensor`` or
            ``adapter_shape_mismatch``.
    """
    data = read_adapter_config(directory)
    config = adapter_config_from(data)
    check_base(data["base_model"], model_identity(model), allow_quantization_mismatch)
    tensors = load_adapter_tensors(directory)
    current = get_diablo_config(model)
    if current is not None and _layout(current) != _layout(config):
        raise _invalid(
            Path(directory), f"adapter config {config} differs from the model's DiaBlo config {current}"
        )
    applied = current is None
    if applied:
        try:
            apply_diablo(model, config)
        except ConfigError as error:
            raise _invalid(Path(directory), f"does not fit this model: {error}") from error
    try:
        load_adapter_state_dict(model, tensors)
    except AdapterError:
        if applied:
            unload_diablo(model)
        raise
    return config


def _layout(config: DiaBloConfig) -> tuple:
    """The fields that decide which tensors exist and their shapes (dropout does not)."""
    return config.num_blocks, config.target_modules, config.layers
