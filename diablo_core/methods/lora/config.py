"""LoRAConfig: rank, alpha, dropout and which linear layers get a low-rank update (torch-free).

Defaults: r=5, alpha=10 on DiaBlo's default targets (q, k, v, up, down). On the default model (SmolLM2-135M,
30 layers) that is 1,036,800 trainable parameters against DiaBlo N=64's 1,088,640, the closest rank to
matched size (r=8 would be 1,658,880), so the two methods compare as the paper compares them (docs/lora.md).
alpha/r = 2, the ratio of PEFT's examples (r=8, alpha=16), keeps the update's scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from diablo_core.methods.diablo.config import DEFAULT_TARGET_MODULES, DiaBloConfig

METHOD = "lora"
# Written next to PEFT's two files: the base model identity PEFT's config has no field for.
IDENTITY_FILE = "diablo_base_model.json"


@dataclass(frozen=True)
class LoRAConfig:
    """Settings of one LoRA adapter.

    Attributes:
        rank: ``r``, the inner dimension of ``B @ A``.
        alpha: Scale numerator: the update is ``(alpha / rank) * B @ A``.
        dropout: Dropout probability on the LoRA branch's input during training.
        target_modules: Exact child names of the ``nn.Linear`` modules to adapt.
        layers: Decoder layer indices to adapt (None: every layer).
    """

    rank: int = 5
    alpha: float = 10.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = field(default=DEFAULT_TARGET_MODULES)
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or self.alpha <= 0:
            raise ValueError(f"alpha must be a positive number, got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))
        # Targets, layers and dropout follow DiaBlo's rules exactly: one validation, reused.
        shared = DiaBloConfig(target_modules=self.target_modules, dropout=self.dropout, layers=self.layers)
        object.__setattr__(self, "target_modules", shared.target_modules)
        object.__setattr__(self, "dropout", shared.dropout)
        object.__setattr__(self, "layers", shared.layers)

    @property
    def scaling(self) -> float:
        """``alpha / rank``, the factor on ``B @ A``."""
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        data["layers"] = None if self.layers is None else list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoRAConfig:
        """Builds a config from ``to_dict()`` output; unknown keys are a ValueError."""
        known = {"rank", "alpha", "dropout", "target_modules", "layers"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LoRA config field(s): {unknown!r}; expected some of {sorted(known)!r}")
        return cls(**dict(data))
