"""Entry point of the ``diablo`` command (``[project.scripts] diablo = "diablo_cli.main:app"``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from diablo_cli import files_cmd, jobs_cmd, keys_cmd, models_cmd
from diablo_cli.banner import mask_password
from diablo_cli.chat_cmd import chat
from diablo_cli.dev_key import first_key_message
from diablo_cli.eval_cmd import evaluate
from diablo_cli.serve import serve
from registry.db import upgrade_database
from registry.settings import get_settings

app = typer.Typer(help="DiaBlo fine-tuning service.", no_args_is_help=True)
app.command()(serve)
app.add_typer(files_cmd.app, name="files")
app.add_typer(jobs_cmd.app, name="jobs")
app.add_typer(models_cmd.app, name="models")
app.add_typer(keys_cmd.app, name="keys")
app.command()(chat)
app.command(name="eval")(evaluate)
console = Console()


EnsureKey = Annotated[
    bool,
    typer.Option("--ensure-key", help="Also give project 'default' a key on the first run, and say where."),
]


@app.command()
def migrate(ensure_key: EnsureKey = False) -> None:
    """Apply pending database migrations to DIABLO_DATABASE_URL, then exit."""
    settings = get_settings()
    upgrade_database(settings.database_url)
    console.print(f"Database at the latest revision: {mask_password(settings.database_url)}", highlight=False)
    if ensure_key:
        console.print(first_key_message(settings), highlight=False, markup=False, soft_wrap=True)


if __name__ == "__main__":
    app()
