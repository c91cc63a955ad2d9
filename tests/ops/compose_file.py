"""docker-compose.yml as the tests read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def load_compose() -> dict[str, Any]:
    """The whole compose file, parsed (YAML anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_service(name: str) -> dict[str, Any]:
    """One service of docker-compose.yml."""
    return load_compose()["services"][name]
