"""What the API commands share: the connection options, the consoles, and failures turned into exit codes.

Exit codes: 0 success; 1 an API error (or, when watching, a job that failed or was cancelled); 2 bad input
(usage errors, and requests the API refused as invalid: 400, 413, 422); 3 the API could not be reached.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diablo_cli.client import DEFAULT_BASE_URL, APIConnectionError, APIRequestError, DiabloClient
from diablo_cli.dev_key import dev_key_for

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
BAD_INPUT_STATUSES = frozenset({400, 413, 422})
# Output that is not a terminal (a pipe, a log file) gets long lines: 80 columns would fold ids.
LOG_WIDTH = 200

BaseUrlOption = Annotated[
    str, typer.Option("--base-url", envvar="DIABLO_BASE_URL", help="The API's address.", show_default=True)
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="DIABLO_API_KEY",
        help="Sent as 'Authorization: Bearer' (default: the key `diablo serve` saved in DIABLO_DATA_DIR, "
        "sent to a loopback URL only).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON object instead of a summary.")]
# How a command shows an API object when --json is not given.
Summary = Callable[[dict[str, Any]], None]


def stdout_console() -> Console:
    """A console on stdout (looked up now, so that test runners that swap it are honoured)."""
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else LOG_WIDTH, highlight=False)


def stderr_console() -> Console:
    """A console on stderr, for details and errors that must stay out of captured stdout."""
    return Console(file=sys.stderr, width=None if sys.stderr.isatty() else LOG_WIDTH, highlight=False)


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout, plain (no markup), so that ``jq`` can read it."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def error_exit_code(error: APIRequestError) -> int:
    """2 for requests refused as invalid, 1 for every other API error."""
    return EXIT_BAD_INPUT if error.status in BAD_INPUT_STATUSES else EXIT_FAILED


def report_api_error(error: APIRequestError, console: Console) -> None:
    """Print an API error on ``console``; dataset problems one per line, each with its line number."""
    code = f" [{error.code}]" if error.code else ""
    console.print(f"[red]error[/red] (HTTP {error.status}){escape(code)}: {escape(error.message)}")
    if error.status == 401:
        console.print(
            "Pass --api-key or set DIABLO_API_KEY; an admin creates keys with "
            "`diablo keys create --project NAME`.",
            markup=False,
        )
    for problem in error.problems:
        message = str(problem.get("message", ""))
        prefix = f"line {problem.get('line')}:"
        console.print(message if message.startswith(prefix) else f"{prefix} {message}", markup=False)


@contextmanager
def connect(base_url: str = DEFAULT_BASE_URL, api_key: str | None = None) -> Iterator[DiabloClient]:
    """A client of the API; API and connection failures end the command with their exit code.

    Without ``api_key``, the development key of a local ``diablo serve`` (``<data_dir>/dev-api-key``) is
    sent if that file is readable and ``base_url`` is a loopback URL.
    """
    err = stderr_console()
    try:
        with DiabloClient(base_url, api_key or dev_key_for(base_url)) as client:
            yield client
    except APIRequestError as error:
        report_api_error(error, err)
        raise typer.Exit(error_exit_code(error)) from error
    except APIConnectionError as error:
        err.print(f"[red]error[/red]: {escape(str(error))}")
        raise typer.Exit(EXIT_UNREACHABLE) from error


@dataclass(frozen=True)
class ApiCall:
    """What an API command does: one call of the client, and how to show its result without ``--json``."""

    call: Callable[[DiabloClient], dict[str, Any]]
    summary: Summary


# The options every API command takes, after its own (typer reads them from the command's signature).
CONNECTION_PARAMETERS = (
    inspect.Parameter(
        "base_url", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_BASE_URL, annotation=BaseUrlOption
    ),
    inspect.Parameter("api_key", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ApiKeyOption),
    inspect.Parameter("json_output", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOption),
)


def api_command(app: typer.Typer, name: str | None = None) -> Callable[[Callable[..., ApiCall]], Callable]:
    """Registers a command that makes one API call, adding ``--base-url``, ``--api-key`` and ``--json``.

    The decorated function takes the command's own arguments and returns the :class:`ApiCall` to make; with
    ``--json`` the API's JSON object is printed, else the call's summary. Failures end the command with their
    exit code (see :func:`connect`).
    """

    def register(command: Callable[..., ApiCall]) -> Callable:
        def run(*args: Any, base_url: str, api_key: str | None, json_output: bool, **kwargs: Any) -> None:
            request = command(*args, **kwargs)
            with connect(base_url, api_key) as client:
                result = request.call(client)
            if json_output:
                print_json(result)
            else:
                request.summary(result)

        own = inspect.signature(command, eval_str=True)
        parameters = [*own.parameters.values(), *CONNECTION_PARAMETERS]
        run.__signature__ = own.replace(parameters=parameters, return_annotation=None)  # type: ignore[attr-defined]
        run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        run.__name__, run.__qualname__, run.__doc__ = command.__name__, command.__qualname__, command.__doc__
        app.command(name)(run)
        return run

    return register


def page_printer(table: Callable[[list[dict[str, Any]]], Table], empty: str) -> Summary:
    """A summary of a list page: its items as ``table(items)`` on stdout, or ``empty`` on stderr."""

    def show(page: dict[str, Any]) -> None:
        if page["data"]:
            stdout_console().print(table(page["data"]))
        else:
            stderr_console().print(empty)

    return show


def print_line(text: str) -> None:
    """A one-line summary on stdout, printed as it is (no markup)."""
    stdout_console().print(text, markup=False)


def print_deleted(deleted: dict[str, Any]) -> None:
    """The summary of a deletion: ``Deleted <id>``."""
    print_line(f"Deleted {deleted['id']}")
