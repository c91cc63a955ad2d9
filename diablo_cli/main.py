"""Entry point of the ``diablo`` command (``[project.scripts] diablo = "diablo_cli.main:app"``)."""

from __future__ import annotations

import typer
from rich.console import Console

from diablo_cli import files_cmd, jobs_cmd, keys_cmd, models_cmd
from diablo_cli.banner import mask_password
from diablo_cli.chat_cmd import chat
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
console = Console()


@app.command()
def migrate() -> None:
    """Apply pending database migrations to DIABLO_DATABASE_URL, then exit."""
    url = get_settings().database_url
    upgrade_database(url)
    console.print(f"Database at the latest revision: {mask_password(url)}", highlight=False)


if __name__ == "__main__":
    app()
