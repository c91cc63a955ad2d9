"""``diablo files upload|list|delete``: the fine-tuning files of the API."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from diablo_cli.client import DEFAULT_BASE_URL
from diablo_cli.connection import (
    ApiCall,
    ApiKeyOption,
    BaseUrlOption,
    api_command,
    connect,
    page_printer,
    print_deleted,
    stderr_console,
)
from diablo_cli.transfer import refuse_existing, save_stream

app = typer.Typer(help="Upload, list, download and delete fine-tuning files.", no_args_is_help=True)

ExistingFile = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A JSONL file of examples.")
]


def format_time(unix_seconds: int | None) -> str:
    """``2026-01-02 03:04`` in local time, or ``-``."""
    if unix_seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(unix_seconds).strftime("%Y-%m-%d %H:%M")


@api_command(app)
def upload(
    path: ExistingFile, purpose: Annotated[str, typer.Option(help="The file's purpose.")] = "fine-tune"
) -> ApiCall:
    """Upload and validate a file; prints only its id on stdout (details go to stderr)."""

    def summary(uploaded: dict[str, Any]) -> None:
        details = f"Uploaded {path.name}: {uploaded['bytes']} bytes, {uploaded['status']}"
        stderr_console().print(details, markup=False)
        typer.echo(uploaded["id"])

    return ApiCall(lambda client: client.upload_file(path, purpose), summary)


def files_table(files: list[dict[str, Any]]) -> Table:
    """The files as a table, newest first."""
    table = Table("id", "filename", "bytes", "created", "status", box=None)
    for item in files:
        created = format_time(item.get("created_at"))
        table.add_row(item["id"], item["filename"], str(item["bytes"]), created, item["status"])
    return table


@api_command(app, "list")
def list_files(
    purpose: Annotated[str | None, typer.Option(help="Only files of this purpose.")] = None,
) -> ApiCall:
    """List the uploaded files, newest first."""
    return ApiCall(lambda client: client.list_files(purpose), page_printer(files_table, "No files."))


@api_command(app)
def delete(file_id: Annotated[str, typer.Argument(help="The id of the file, e.g. file-0123…")]) -> ApiCall:
    """Delete a file and its stored bytes."""
    return ApiCall(lambda client: client.delete_file(file_id), print_deleted)


@app.command()
def download(
    file_id: Annotated[str, typer.Argument(help="The id of the file, e.g. file-0123…")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Default: its uploaded name.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Download a file's bytes as uploaded."""
    with connect(base_url, api_key) as client:
        target = output or Path(Path(client.get_file(file_id)["filename"]).name)
        refuse_existing(target, force)
        save_stream(client, f"/v1/files/{quote(file_id, safe='')}/content", None, target)
    stderr_console().print(f"Wrote {target}", markup=False)
