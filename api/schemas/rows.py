"""The base of the public objects that are a registry row as it is (files, events, checkpoints)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict


class RowPublic(BaseModel):
    # No docstring: it would become the description of every such object in the OpenAPI document.
    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def from_row(cls, row: object) -> Self:
        """The public object of ``row``: its attributes by field name (or a field's ``validation_alias``)."""
        return cls.model_validate(row)
