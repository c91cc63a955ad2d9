"""``diablo models list|delete|download|export``: base models and fine-tuned models."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table
from rich.text import Text

from diablo_cli.client import DEFAULT_BASE_URL
from diablo_cli.connection import (
    ApiCall,
    ApiKeyOption,
    BaseUrlOption,
    api_command,
    connect,
    print_deleted,
    stderr_console,
    stdout_console,
)
from diablo_cli.files_cmd import format_time
from diablo_cli.transfer import refuse_existing, save_stream, unpack_tar

app = typer.Typer(help="List, delete, download and export models.", no_args_is_help=True)
FineTunedModel = Annotated[
    str, typer.Argument(help="A fine-tuned model or checkpoint, e.g. ft:<base>:<suffix>:<id>[:ckpt-step-N].")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]


class ExportFormat(StrEnum):
    merged = "merged"
    gguf = "gguf"


class Quantization(StrEnum):
    f16 = "f16"
    q8_0 = "q8_0"


def content_path(model_id: str) -> str:
    """``/v1/models/{id}/content``; ids keep their ``/`` and ``:``."""
    return f"/v1/models/{quote(model_id, safe='/:')}/content"


def fetch_folder(base_url: str, api_key: str | None, model_id: str, format: str, output: Path) -> None:
    """Download the ``format`` archive of ``model_id`` and unpack it as the folder ``output``."""
    archive = output.with_name(f".{output.name}.tar")
    with connect(base_url, api_key) as client:
        save_stream(client, content_path(model_id), {"format": format}, archive)
    unpack_tar(archive, output)


def models_table(models: list[dict[str, Any]]) -> Table:
    """The models as a table: base models first, then fine-tuned ones newest first."""
    table = Table("id", "owned by", "base model", "created", box=None)
    for model in models:
        base = model.get("base_model") or "-"
        # Text: rich would read ":a:" in an id as an emoji code.
        table.add_row(Text(model["id"]), model["owned_by"], Text(base), format_time(model.get("created")))
    return table


@api_command(app, "list")
def list_models() -> ApiCall:
    """List the base models and the fine-tuned models."""
    return ApiCall(
        lambda client: client.list_models(), lambda page: stdout_console().print(models_table(page["data"]))
    )


@api_command(app)
def delete(
    model_id: Annotated[str, typer.Argument(help="A fine-tuned model, e.g. ft:<base>:<suffix>:<id>.")],
) -> ApiCall:
    """Delete a fine-tuned model and its adapter files (base models cannot be deleted)."""
    return ApiCall(lambda client: client.delete_model(model_id), print_deleted)


@app.command()
def download(
    model_id: FineTunedModel,
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write the adapter files to.")],
    force: ForceOption = False,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Download a fine-tuned model's adapter (adapter_config.json + adapter_model.safetensors)."""
    refuse_existing(output, force)
    fetch_folder(base_url, api_key, model_id, "adapter", output)
    stderr_console().print(f"Adapter of {model_id} written to {output}", markup=False)


@app.command()
def export(
    model_id: FineTunedModel,
    output: Annotated[Path, typer.Option("--output", "-o", help="merged: a folder; gguf: a file.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="merged (Hugging Face) or gguf.")],
    quantization: Annotated[Quantization, typer.Option(help="GGUF tensor type.")] = Quantization.f16,
    force: ForceOption = False,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Export a fine-tuned model merged into its base: a Hugging Face checkpoint or a GGUF file."""
    refuse_existing(output, force)
    if format is ExportFormat.merged:
        fetch_folder(base_url, api_key, model_id, "merged", output)
    else:
        params = {"format": "gguf", "quantization": quantization.value}
        with connect(base_url, api_key) as client:
            save_stream(client, content_path(model_id), params, output)
    stderr_console().print(f"{format.value} export of {model_id} written to {output}", markup=False)
