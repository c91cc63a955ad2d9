"""The development API key of ``make run``: created on the first start, kept in ``<data_dir>/dev-api-key``.

``diablo serve`` makes sure the local project ``default`` has a key and prints it; the API commands of the
CLI fall back to this file when neither ``--api-key`` nor ``DIABLO_API_KEY`` is given, so that a local
service works without copying the key around, but only to a loopback base URL (127.0.0.0/8, ::1,
localhost): a remote server never receives it. The file is readable by its owner only.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from registry.api_keys import create_api_key, has_active_key, verify_api_key
from registry.db import session_scope
from registry.models import DEFAULT_PROJECT
from registry.settings import Settings

DEV_KEY_FILE = "dev-api-key"
DEV_KEY_NAME = "development key (diablo serve)"


def dev_key_path(data_dir: Path) -> Path:
    """Where the development key of the service rooted at ``data_dir`` is kept."""
    return data_dir / DEV_KEY_FILE


def read_dev_key(data_dir: Path) -> str | None:
    """The key stored in ``<data_dir>/dev-api-key``, or None if there is none or it cannot be read."""
    try:
        key = dev_key_path(data_dir).read_text().strip()
    except OSError:
        return None
    return key or None


def local_dev_key() -> str | None:
    """The development key under the data dir the ``DIABLO_*`` variables name now (None if unreadable)."""
    try:
        data_dir = Settings().data_dir
    except ValidationError:  # a setting meant for the server is invalid: no local key, the request decides
        return None
    return read_dev_key(data_dir)


def is_loopback_url(base_url: str) -> bool:
    """Whether ``base_url`` names this machine by a loopback address or ``localhost`` (no DNS lookup)."""
    host = urlsplit(base_url if "//" in base_url else f"//{base_url}").hostname
    if host is None:
        return False
    if host.rstrip(".") == "localhost":  # hostname is lower-cased by urlsplit
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # any other name may resolve to another machine
        return False


def dev_key_for(base_url: str) -> str | None:
    """The local development key when ``base_url`` is a loopback URL, else None."""
    return local_dev_key() if is_loopback_url(base_url) else None


def write_secret(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path`` with mode 0600, replacing the file in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secret + "\n")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def ensure_dev_key(settings: Settings) -> str | None:
    """The development key of project ``default``, created (and saved) if that project has no key yet.

    Returns:
        The key from ``<data_dir>/dev-api-key`` if it is valid, a new one on the first start, or None when
        auth is off or the project has other keys that this folder does not hold (they were made by hand).
    """
    if settings.auth == "off":
        return None
    stored = read_dev_key(settings.data_dir)
    with session_scope(settings.database_url) as session:
        if stored is not None and verify_api_key(session, stored) == DEFAULT_PROJECT:
            return stored
        if has_active_key(session, DEFAULT_PROJECT):
            return None
        _, secret = create_api_key(session, DEFAULT_PROJECT, DEV_KEY_NAME)
        write_secret(dev_key_path(settings.data_dir), secret)
    return secret


def dev_key_for_banner(settings: Settings) -> tuple[str | None, bool]:
    """``ensure_dev_key``'s key, and whether this start created it: only then does the banner show it in
    full, so the logs of later starts never hold it."""
    stored = read_dev_key(settings.data_dir)
    key = ensure_dev_key(settings)
    return key, key is not None and key != stored


def first_key_message(settings: Settings) -> str:
    """What a fresh install (``diablo migrate --ensure-key``, run by ``docker compose up``) tells its user.

    The key is shown in full only when this call created it, so later starts never log it again.
    """
    if settings.auth == "off":
        return "Authentication is off (DIABLO_AUTH=off): requests need no API key."
    key, created = dev_key_for_banner(settings)
    path, project = dev_key_path(settings.data_dir), DEFAULT_PROJECT
    if created:
        return (
            f"Created an API key for project {project!r} (saved in {path}); send it as a bearer token:\n{key}"
        )
    if key is not None:
        return f"The API key of project {project!r} is in {path} (docker compose exec api cat {path})."
    return (
        f"Project {project!r} already has API keys made by hand; make another with "
        f"`diablo keys create --project {project}` (docker compose run --rm migrate diablo keys create ...)."
    )
