"""``diablo models list|delete``: base models and fine-tuned models."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from diablo_cli.client import DEFAULT_BASE_URL
from diablo_cli.connection import ApiKeyOption, BaseUrlOption, JsonOption, connect, print_json, stdout_console
from diablo_cli.files_cmd import format_time

app = typer.Typer(help="List and delete models.", no_args_is_help=True)


def models_table(models: list[dict[str, Any]]) -> Table:
    """The models as a table: base models first, then fine-tuned ones newest first."""
    table = Table("id", "owned by", "base model", "created", box=None)
    for model in models:
        base = model.get("base_model") or "-"
        table.add_row(model["id"], model["owned_by"], base, format_time(model.get("created")))
    return table


@app.command("list")
def list_models(
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the base models and the fine-tuned models."""
    with connect(base_url, api_key) as client:
        page = client.list_models()
    if json_output:
        print_json(page)
    else:
        stdout_console().print(models_table(page["data"]))


@app.command()
def delete(
    model_id: Annotated[str, typer.Argument(help="A fine-tuned model, e.g. ft:<base>:<suffix>:<id>.")],
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a fine-tuned model and its adapter files (base models cannot be deleted)."""
    with connect(base_url, api_key) as client:
        deleted = client.delete_model(model_id)
    if json_output:
        print_json(deleted)
    else:
        stdout_console().print(f"Deleted {deleted['id']}", markup=False)
