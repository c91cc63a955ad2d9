"""Newest-first pages over tables whose ids sort by creation time (see ``registry.ids``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: the rows, newest first, and whether older rows remain."""

    data: list[T]
    has_more: bool


def paginate(
    session: Session,
    statement: Select[tuple[T]],
    id_column: InstrumentedAttribute[Any],
    *,
    after: str | None = None,
    limit: int = 20,
) -> Page[T]:
    """Run ``statement`` newest first, starting after the row with id ``after``.

    Args:
        session: The session to query with.
        statement: A select of one entity, already filtered.
        id_column: The entity's time-sortable id column.
        after: Return only rows older than this id (the last id of the previous page).
        limit: The most rows to return; at least 1.

    Raises:
        ValueError: If ``limit`` is below 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if after is not None:
        statement = statement.where(id_column < after)
    rows = list(session.scalars(statement.order_by(id_column.desc()).limit(limit + 1)))
    return Page(data=rows[:limit], has_more=len(rows) > limit)
