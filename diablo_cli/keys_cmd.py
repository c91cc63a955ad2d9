"""``diablo keys create|list|revoke``: API keys, managed directly in the database (an admin command).

These commands do not go through the API: run them where ``DIABLO_DATABASE_URL`` reaches the registry (the
machine of ``make run``, or ``docker compose exec api diablo keys ...``). ``create`` prints the new key alone
on its last line, so that scripts can capture it: ``KEY=$(diablo keys create --project ci | tail -n 1)``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from diablo_cli.connection import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    JsonOption,
    print_json,
    stderr_console,
    stdout_console,
)
from diablo_cli.files_cmd import format_time
from registry.api_keys import AmbiguousKeyError, create_api_key, list_api_keys, revoke_api_key
from registry.db import session_scope, upgrade_database
from registry.models import ApiKey
from registry.settings import Settings

app = typer.Typer(help="Create, list and revoke API keys (an admin command: it opens the database).",
                  no_args_is_help=True)  # fmt: skip


def _database_url() -> str:
    """The configured registry, migrated (a fresh install may create its first key before serving)."""
    url = Settings().database_url
    upgrade_database(url)
    return url


@app.command()
def create(
    project: Annotated[str, typer.Option("--project", help="The project the key acts for.")],
    name: Annotated[str | None, typer.Option("--name", help="A label to recognise the key by.")] = None,
) -> None:
    """Create a key for a project; the key is printed once, alone on the last line."""
    try:
        with session_scope(_database_url()) as session:
            record, secret = create_api_key(session, project, name)
    except ValueError as error:
        stderr_console().print(f"[red]error[/red]: {escape(str(error))}")
        raise typer.Exit(EXIT_BAD_INPUT) from error
    typer.echo(f"Created API key {record.id} ({record.prefix}...) for project {record.project_id!r}.")
    typer.echo("Send it as 'Authorization: Bearer <key>' (or DIABLO_API_KEY for the CLI). It is shown once:")
    typer.echo(secret)


def _public(record: ApiKey) -> dict[str, object]:
    fields = ("id", "project_id", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    return {field: getattr(record, field) for field in fields}


@app.command("list")
def list_keys(
    project: Annotated[str | None, typer.Option("--project", help="Only this project's keys.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    json_output: JsonOption = False,
) -> None:
    """List keys, newest first (their prefixes only: secrets are never stored)."""
    with session_scope(_database_url()) as session:
        records = list_api_keys(session, project, include_revoked=show_all)
    if json_output:
        print_json({"object": "list", "data": [_public(record) for record in records]})
        return
    table = Table("id", "project", "name", "prefix", "created", "last used", "revoked", box=None)
    for record in records:
        times = (format_time(t) for t in (record.created_at, record.last_used_at, record.revoked_at))
        table.add_row(record.id, record.project_id, record.name or "-", f"{record.prefix}...", *times)
    stdout_console().print(table if records else "No API keys.")


@app.command()
def revoke(
    key: Annotated[str, typer.Argument(help="The key's id, its shown prefix, or the key itself.")],
) -> None:
    """Revoke a key: requests with it are answered 401 from now on."""
    try:
        with session_scope(_database_url()) as session:
            revoked = revoke_api_key(session, key)
    except AmbiguousKeyError as error:
        stderr_console().print(f"[red]error[/red]: {escape(str(error))}")
        raise typer.Exit(EXIT_BAD_INPUT) from error
    if not revoked:
        stderr_console().print(f"[red]error[/red]: no active API key matches {escape(repr(key))}")
        raise typer.Exit(EXIT_FAILED)
    typer.echo("API key revoked.")
