"""What ``diablo serve`` prints once the API answers: where everything is and a curl session to try it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from diablo_cli.dev_key import DEV_KEY_FILE
from registry.api_keys import masked_key
from registry.settings import Settings

EXAMPLE_TRAIN_FILE = Path("examples/arithmetic/train.jsonl")
EXAMPLE_GENERATOR = Path("examples/arithmetic/generate.py")
GENERATED_DIR = Path("data/arithmetic")
# Reads the "id" field of the JSON object on stdin; python3 is present wherever the service runs.
READ_ID = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"id\"])'"


def mask_password(url: str) -> str:
    """Return ``url`` with its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def display_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def example_train_file(data_dir: Path) -> tuple[Path, list[str]]:
    """Pick a training file for the example and the commands (if any) that must create it first."""
    for candidate in (EXAMPLE_TRAIN_FILE, data_dir / "arithmetic" / "train.jsonl"):
        if candidate.is_file():
            return _relative(candidate), []
    target = GENERATED_DIR / "train.jsonl"
    return target, [f"{sys.executable} {EXAMPLE_GENERATOR} --out {GENERATED_DIR}"]


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def curl_example(base_url: str, model: str, train_file: Path, api_key: str | None = None) -> list[str]:
    """Shell lines that upload ``train_file``, start a one-epoch job on ``model`` and poll it.

    With ``api_key`` (a key, or a shell expression that prints one), every request carries it as
    ``Authorization: Bearer``.
    """
    job = f'{{"model": "{model}", "training_file": "\'"$FILE_ID"\'", "hyperparameters": {{"n_epochs": 1}}}}'
    auth = f'-H "Authorization: Bearer {api_key}" ' if api_key else ""
    return [
        f"FILE_ID=$(curl -s -F purpose=fine-tune -F file=@{train_file} {auth}"
        f"{base_url}/v1/files | {READ_ID})",
        f"JOB_ID=$(curl -s -H 'Content-Type: application/json' {auth}-d '{job}' "
        f"{base_url}/v1/fine_tuning/jobs | {READ_ID})",
        f"curl -s {auth}{base_url}/v1/fine_tuning/jobs/$JOB_ID",
        f"curl -s {auth}{base_url}/v1/fine_tuning/jobs/$JOB_ID/events",
    ]


def api_key_row(settings: Settings, api_key: str | None, key_shown: bool = True) -> str:
    """What the banner says about authentication: the development key (masked unless ``key_shown``), or
    how to get a key."""
    if settings.auth == "off":
        return "not needed (DIABLO_AUTH=off: for local use only)"
    if api_key is None:
        return "create one with: diablo keys create --project NAME"
    where = f"project 'default', saved in {settings.data_dir / DEV_KEY_FILE}"
    if not key_shown:
        return f"{masked_key(api_key)}  ({where}; shown in full on the first start only)"
    return f"{api_key}  ({where})"


def curl_key(settings: Settings, api_key: str | None, key_shown: bool) -> str | None:
    """The key the curl example sends: itself on the first start, later a command that reads its file."""
    if api_key is None or key_shown:
        return api_key
    return f"$(cat {shlex.quote(str(settings.data_dir / DEV_KEY_FILE))})"


def print_banner(
    console: Console,
    settings: Settings,
    base_url: str,
    workers: int,
    api_key: str | None = None,
    key_shown: bool = True,
) -> None:
    """Print the service panel (URLs, API key, data dir, registry, broker) followed by the curl example.

    With ``key_shown`` False the key appears masked: logs of later starts never hold it in full.
    """
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")  # a long path folds onto the next line instead of losing its end
    grid.add_row("API", base_url)
    grid.add_row("Docs", f"{base_url}/docs")
    grid.add_row("API key", api_key_row(settings, api_key, key_shown))
    grid.add_row("Data dir", str(settings.data_dir))
    grid.add_row("Registry", mask_password(settings.database_url))
    grid.add_row("Broker", mask_password(settings.broker_url))
    grid.add_row("Workers", f"{workers} on queue {settings.queue_name!r}")
    grid.add_row("Model", settings.default_model)
    console.print(
        Panel(grid, title="DiaBlo fine-tuning service", subtitle="Ctrl-C stops everything", expand=False)
    )
    train_file, prepare = example_train_file(settings.data_dir)
    console.print("Try it (upload, start a job, poll it):")
    for line in [
        *prepare,
        *curl_example(base_url, settings.default_model, train_file, curl_key(settings, api_key, key_shown)),
    ]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
