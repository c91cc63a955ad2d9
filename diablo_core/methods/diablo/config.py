"""DiaBloConfig: which linear layers get diagonal blocks, how many blocks, and the adapter dropout."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")
# An adapter directory's two files (written by ``adapter_io``); named here, torch-free, for the API.
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def _as_tuple(name: str, value: Any) -> tuple:
    """Turns a list (as users give it in JSON) into a tuple; rejects strings and scalars."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class DiaBloConfig:
    """Settings of one DiaBlo adapter.

    Attributes:
        num_blocks: Requested number of diagonal blocks ``N`` per adapted layer (block sizes are
            ``ceil(in/N)`` and ``ceil(out/N)``).
        target_modules: Exact child names of the ``nn.Linear`` modules to adapt (``q_proj`` matches
            ``model.layers.0.self_attn.q_proj`` but not ``my_q_proj_x``).
        dropout: Dropout probability on the adapter branch's input during training.
        layers: Decoder layer indices to adapt (``...layers.<i>...`` in the module path); ``None`` adapts
            every layer.
    """

    num_blocks: int = 64
    target_modules: tuple[str, ...] = field(default=DEFAULT_TARGET_MODULES)
    dropout: float = 0.05
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive integer, got {self.num_blocks!r}")
        self._validate_targets()
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        if self.layers is not None:
            self._validate_layers()

    def _validate_targets(self) -> None:
        targets = _as_tuple("target_modules", self.target_modules)
        if not targets:
            raise ValueError(f"target_modules must name at least one module, got {self.target_modules!r}")
        for name in targets:
            if not isinstance(name, str) or not name or "." in name:
                raise ValueError(f"target_modules entries must be child names like 'q_proj', got {name!r}")
        if len(set(targets)) != len(targets):
            raise ValueError(f"target_modules has duplicates: {list(targets)!r}")
        object.__setattr__(self, "target_modules", targets)

    def _validate_layers(self) -> None:
        layers = _as_tuple("layers", self.layers)
        if not layers:
            raise ValueError(f"layers must be null or a non-empty list of layer indices, got {self.layers!r}")
        for index in layers:
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(f"layers entries must be non-negative integers, got {index!r}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers has duplicates: {list(layers)!r}")
        object.__setattr__(self, "layers", tuple(sorted(layers)))

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict (tuples become lists)."""
        return {
            "num_blocks": self.num_blocks,
            "target_modules": list(self.target_modules),
            "dropout": self.dropout,
            "layers": None if self.layers is None else list(self.layers),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiaBloConfig:
        """Builds a config from a dict such as ``to_dict()`` output; unknown keys are a ValueError.

        Args:
            data: Mapping with any of the fields ``num_blocks``, ``target_modules``, ``dropout``, ``layers``.

        Returns:
            The validated config (missing fields take their defaults).
        """
        known = {"num_blocks", "target_modules", "dropout", "layers"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown DiaBlo config field(s): {unknown!r}; expected some of {sorted(known)!r}"
            )
        return cls(**dict(data))
