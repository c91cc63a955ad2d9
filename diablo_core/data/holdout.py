"""A validation split held out of the training examples, the same for the same seed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Example = TypeVar("Example")


@dataclass(frozen=True)
class Holdout(Generic[Example]):
    """The examples to train on, the examples held out, and the held-out ones' 0-based positions."""

    train: list[Example]
    valid: list[Example]
    valid_indices: list[int]


def split_holdout(examples: Sequence[Example], count: int, seed: int) -> Holdout[Example]:
    """Holds ``count`` examples out of ``examples``, chosen by ``seed``; both parts keep the file's order.

    Raises:
        ValueError: If ``count`` is negative or leaves no example to train on.
    """
    if count < 0 or count >= len(examples):
        raise ValueError(f"cannot hold out {count} of {len(examples)} examples and still train")
    chosen = sorted(random.Random(seed).sample(range(len(examples)), count))
    held = set(chosen)
    train = [example for index, example in enumerate(examples) if index not in held]
    return Holdout(train=train, valid=[examples[i] for i in chosen], valid_indices=chosen)
