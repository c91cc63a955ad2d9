"""docs/operations.md's configuration reference names every ``Settings`` field, its variable and default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic.fields import FieldInfo

from registry.settings import Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
HEADING = "## Configuration reference"
COLUMNS = ["Setting", "Environment variable", "Default", "Meaning"]


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading``, header row included (backticks kept)."""
    lines = markdown[markdown.index(heading) :].splitlines()[1:]
    start = next(index for index, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not all(set(cell) <= set("-: ") for cell in cells):  # not the separator row
            rows.append(cells)
    return rows


def documented_default(field: FieldInfo) -> str:
    """How the table writes a field's default: the value in backticks, "unset", or "derived"."""
    value: Any = field.default
    if value is None:
        return "unset"
    if value == "":
        return "derived"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return f"`{value}`" if value.is_absolute() else f"`./{value}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


@pytest.fixture(scope="module")
def reference() -> dict[str, list[str]]:
    rows = table_rows(OPERATIONS.read_text(), HEADING)
    assert rows[0] == COLUMNS
    return {row[0].strip("`"): row for row in rows[1:]}


def test_every_setting_is_documented_once(reference: dict[str, list[str]]) -> None:
    rows = table_rows(OPERATIONS.read_text(), HEADING)[1:]
    assert len(rows) == len(reference), "a setting is listed twice"
    missing = sorted(set(Settings.model_fields) - set(reference))
    suggestions = "\n".join(
        f"| `{name}` | `DIABLO_{name.upper()}` | {documented_default(Settings.model_fields[name])} | ... |"
        for name in missing
    )
    assert not missing, f"add to {OPERATIONS.name}:\n{suggestions}"
    assert set(reference) <= set(Settings.model_fields), "the table lists settings that do not exist"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_row_gives_the_variable_default_and_meaning(reference: dict[str, list[str]], name: str) -> None:
    _, variable, default, meaning = reference[name]
    assert variable == f"`DIABLO_{name.upper()}`"
    assert default.startswith(documented_default(Settings.model_fields[name])), default
    assert len(meaning) > 10


def test_derived_urls_are_the_ones_settings_derive(reference: dict[str, list[str]], tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    for name in ("database_url", "broker_url"):
        derived = reference[name][2].removeprefix("derived: ").strip("`")
        assert derived.replace("<data_dir>", str(tmp_path)) == getattr(settings, name)


def test_env_prefix_is_the_one_documented() -> None:
    assert Settings.model_config["env_prefix"] == "DIABLO_"
