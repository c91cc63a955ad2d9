"""The envelope of every paged list: ``{"object": "list", "data", "has_more", "first_id", "last_id"}``."""

from __future__ import annotations

from typing import Generic, Literal, Self, TypeVar

from pydantic import BaseModel

Item = TypeVar("Item", bound=BaseModel)


class ListPublic(BaseModel, Generic[Item]):
    # No docstring: it would become the description of every list in the OpenAPI document.
    object: Literal["list"] = "list"
    data: list[Item]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, data: list[Item], has_more: bool) -> Self:
        """One page; ``first_id`` and ``last_id`` are its first and last items' ids (None when empty)."""
        first, last = (data[0].id, data[-1].id) if data else (None, None)  # type: ignore[attr-defined]
        return cls(data=data, has_more=has_more, first_id=first, last_id=last)
