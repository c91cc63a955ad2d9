"""Directories as uncompressed tar archives, written file by file (never whole in memory)."""

from __future__ import annotations

import tarfile
from pathlib import Path


def write_tar(source: Path, target: Path, root: str, names: tuple[str, ...] | None = None) -> Path:
    """Archive the files under ``source`` (only ``names``, when given) into ``target``, under ``root``.

    Safetensors weights barely compress, so the archive is plain tar: fast to write and to stream. Files are
    added in sorted order with fixed owners and modes, so the same directory gives the same members.
    """

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(source, arcname=root, recursive=False, filter=normalize)
        paths = sorted(source.rglob("*")) if names is None else [source / name for name in names]
        for path in paths:
            if path.is_file() and not path.name.startswith("."):
                archive.add(path, arcname=f"{root}/{path.relative_to(source).as_posix()}", filter=normalize)
    return target
