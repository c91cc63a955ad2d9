"""``GET /v1/models/{model}/content``: a fine-tuned model's adapter, merged checkpoint or GGUF file.

Registered before ``api.routes.models``, whose ``/{model_id:path}`` would otherwise take ``.../content``.
"""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from api.deps import CurrentProject, SettingsDep
from api.services import model_exports as service
from diablo_core.export.formats import ExportFormat, Quantization

router = APIRouter(prefix="/v1/models", tags=["models"])
FORMAT_HELP = "adapter: the adapter files (tar); merged: a Hugging Face checkpoint (tar); gguf: a GGUF file."


@router.get("/{model_id:path}/content", response_class=FileResponse)
async def download_model(
    settings: SettingsDep,
    project: CurrentProject,
    model_id: str,
    format: Annotated[ExportFormat, Query(description=FORMAT_HELP)] = "adapter",
    quantization: Annotated[Quantization | None, Query(description="GGUF only; f16 by default.")] = None,
) -> FileResponse:
    """Download a fine-tuned model or checkpoint as its adapter, a merged checkpoint or a GGUF file."""
    request = service.export_request(format, quantization)
    export = await to_thread.run_sync(service.export_file, settings, project, model_id, request)
    return FileResponse(export.path, media_type=export.media_type, filename=export.filename)
