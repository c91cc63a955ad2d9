"""Exporting a fine-tuned model or checkpoint: its adapter, a merged checkpoint or a GGUF file, built once
per adapter sha256 and exporter version under ``<data_dir>/exports/`` (``diablo_core.export.build``).

``export_file`` blocks (a merged build loads the base model): the route runs it in a worker thread. torch is
imported only there, so importing this module stays light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from api.errors import APIError, not_found
from api.services.adapter_refs import AdapterFiles, find_adapter_files
from diablo_core.errors import AdapterError, ExportError, ModelLoadError
from diablo_core.export.formats import MEDIA_TYPES, ExportRequest
from registry.base_models import find_base_model, is_fine_tuned_name, load_source
from registry.db import get_sessionmaker
from registry.settings import Settings

EXPORTS_FOLDER = "exports"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ModelExport:
    """A built export: the file to send, the name to download it as, and its media type."""

    path: Path
    filename: str
    media_type: str


def exports_dir(settings: Settings) -> Path:
    """Where exports are kept, one folder per adapter sha256."""
    return settings.data_dir / EXPORTS_FOLDER


def export_request(format: str, quantization: str | None) -> ExportRequest:
    """The validated request; 400 ``invalid_value`` naming the parameter otherwise."""
    try:
        return ExportRequest(format, quantization)
    except ExportError as error:
        param = "quantization" if "quantization" in error.message else "format"
        raise APIError(400, error.message, code="invalid_value", param=param) from error


def find_exportable(settings: Settings, project: str, model_id: str) -> AdapterFiles:
    """The adapter of ``model_id`` in ``project``.

    Raises:
        APIError: 400 ``model_not_exportable`` for a base model; 404 ``model_not_found`` otherwise.
    """
    with get_sessionmaker(settings.database_url)() as session:
        files = find_adapter_files(session, settings, project, model_id)
    if files is not None:
        return files
    if not is_fine_tuned_name(model_id) and find_base_model(model_id, settings) is not None:
        message = f"Model '{model_id}' is a base model; only fine-tuned models and checkpoints are exported"
        raise APIError(400, message, code="model_not_exportable", param="model")
    raise not_found("model", model_id, code="model_not_found", param="model")


def export_file(settings: Settings, project: str, model_id: str, request: ExportRequest) -> ModelExport:
    """Build (or find) the export of ``model_id``; blocking.

    Raises:
        APIError: 400 ``model_not_exportable``, 404 ``model_not_found``, 422 ``export_unsupported`` (an
            architecture the format cannot hold), 409 when the base model or the adapter is unusable.
    """
    from diablo_core.export.build import ExportSource, export_model  # loads torch: only when exporting

    files = find_exportable(settings, project, model_id)
    try:
        base = load_source(files.base_model, settings)
    except LookupError as error:
        message = f"Model '{model_id}' was trained on '{files.base_model}', which this server does not have"
        raise APIError(409, message, code="base_model_unavailable", param="model") from error
    source = ExportSource(files.directory, files.sha256, base, settings.data_dir)
    try:
        path = export_model(source, request, exports_dir(settings))
    except ExportError as error:
        message = f"Model '{model_id}': {error.message}"
        raise APIError(422, message, code=error.code, param="format") from error
    except (AdapterError, ModelLoadError) as error:
        message = f"Model '{model_id}': {error.message}"
        raise APIError(409, message, code=error.code, param="model") from error
    filename = _UNSAFE.sub("_", model_id).strip("_.") + request.suffix
    return ModelExport(path, filename, MEDIA_TYPES[request.format])
