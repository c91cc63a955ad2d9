"""Writes that survive a power loss: a file's bytes and the directory entry that names it reach the disk.

A rename is atomic but not durable: until the directory is synced, a crash can forget it, and until the
file is synced, the name can point at an empty or partial file. So a file is synced before it is renamed
into place and the directory after, both before the registry commit that makes the file visible.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Flush ``path``'s bytes to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_dir(path: Path) -> None:
    """Flush the entries of directory ``path`` (renames and new names in it) to the disk."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(path: Path) -> None:
    """Flush every file under ``path``, every folder in it, and ``path`` itself (a file or a folder)."""
    if path.is_file():
        fsync_file(path)
        return
    for folder, _, names in os.walk(path, topdown=False):  # children before the folder that lists them
        for name in names:
            fsync_file(Path(folder, name))
        fsync_dir(Path(folder))


def replace_durably(source: Path, target: Path) -> None:
    """Rename the (synced) file ``source`` to ``target`` and sync the target's directory."""
    fsync_file(source)
    source.replace(target)
    fsync_dir(target.parent)
