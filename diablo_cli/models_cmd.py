"""``diablo models list|delete``: base models and fine-tuned models."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from diablo_cli.connection import (
    ApiCall,
    api_command,
    print_deleted,
    stdout_console,
)
from diablo_cli.files_cmd import format_time

app = typer.Typer(help="List and delete models.", no_args_is_help=True)


def models_table(models: list[dict[str, Any]]) -> Table:
    """The models as a table: base models first, then fine-tuned ones newest first."""
    table = Table("id", "owned by", "base model", "created", box=None)
    for model in models:
        base = model.get("base_model") or "-"
        table.add_row(model["id"], model["owned_by"], base, format_time(model.get("created")))
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
