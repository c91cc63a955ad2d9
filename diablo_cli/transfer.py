"""Downloads to disk: streamed with a progress bar into ``<target>.part``, renamed into place when whole;
tar archives unpacked into a folder that appears only once complete."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from diablo_cli.client import DiabloClient
from diablo_cli.connection import EXIT_BAD_INPUT, stderr_console

CHUNK_BYTES = 1 << 20
# Smaller transfers finish before a bar would be worth drawing.
PROGRESS_FROM_BYTES = 4 << 20


def refuse_existing(target: Path, force: bool) -> None:
    """Exit 2 when ``target`` exists (a non-empty folder, or a file) and ``--force`` was not given."""
    occupied = (target.is_dir() and any(target.iterdir())) or target.is_file()
    if occupied and not force:
        stderr_console().print(f"error: {target} exists; pass --force to replace it", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT)


def save_stream(client: DiabloClient, path: str, params: dict[str, Any] | None, target: Path) -> Path:
    """Stream ``GET path`` into ``target``: written as ``target.part``, renamed when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with client.download(path, params) as response, open(part, "wb") as out:
            total = int(response.headers.get("content-length") or 0) or None
            columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            quiet = total is not None and total < PROGRESS_FROM_BYTES
            with Progress(*columns, console=stderr_console(), transient=True, disable=quiet) as progress:
                task = progress.add_task(target.name, total=total)
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    out.write(chunk)
                    progress.update(task, advance=len(chunk))
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return target


def unpack_tar(archive: Path, target: Path) -> Path:
    """Unpack an archive of one top folder as ``target`` (replacing it); members outside are refused."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        (root,) = list(staging.iterdir())
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(root, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return target
