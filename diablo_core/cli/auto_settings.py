"""``--lr auto`` and ``--warmup-steps auto`` for ``python -m diablo_core train``: the job API's rules
(``diablo_core.spec.auto``), resolved once the model and the data are known."""

from __future__ import annotations

import dataclasses

from diablo_core.spec.auto import auto_learning_rate, auto_warmup
from diablo_core.spec.training import TrainingConfig, count_total_steps

AUTO = "auto"


def parse_auto(value: str, name: str, integer: bool) -> float | int | None:
    """``"auto"`` as None, else the number ``value`` names.

    Raises:
        ValueError: If ``value`` is neither "auto" nor a number of the right kind.
    """
    if value == AUTO:
        return None
    try:
        return int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be 'auto' or {kind}, got {value!r}") from None


def fit_auto_settings(
    config: TrainingConfig,
    *,
    learning_rate: float | None,
    warmup_steps: int | None,
    hidden_size: int,
    num_blocks: int,
    num_examples: int,
) -> tuple[TrainingConfig, list[str]]:
    """``config`` with each setting given as None (``"auto"``) chosen for the model and the data, and a
    line per choice saying what was chosen."""
    chosen: dict[str, float | int] = {}
    said = []
    if learning_rate is None:
        chosen["learning_rate"] = auto_learning_rate(hidden_size, num_blocks)
        rate = chosen["learning_rate"]
        said.append(f"learning rate {rate:.3g} (auto: width {hidden_size}, N={num_blocks})")
    else:
        chosen["learning_rate"] = learning_rate
    if warmup_steps is None:
        total = count_total_steps(num_examples, config.batch_size, config.n_epochs, config.max_steps)
        chosen["warmup_steps"] = auto_warmup(total)
        said.append(f"warm-up {chosen['warmup_steps']} steps (auto: a tenth of {total}, at most 100)")
    else:
        chosen["warmup_steps"] = warmup_steps
    return dataclasses.replace(config, **chosen), said
