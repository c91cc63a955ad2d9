"""``POST /v1/evaluations``: a model's greedy answers to a file of held-out chat examples, scored."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Scored answers shown in a response unless the request asks for more or fewer.
DEFAULT_SHOWN_SAMPLES = 20


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=512)
    file: str = Field(min_length=1, max_length=64, description="A fine-tune file of chat examples")
    max_samples: int = Field(default=DEFAULT_SHOWN_SAMPLES, ge=0, le=1000, description="Scored answers shown")


class EvaluationSample(BaseModel):
    line: int
    reference: str
    answer: str
    exact_match: bool
    contains: bool


class EvaluationPublic(BaseModel):
    object: Literal["evaluation"] = "evaluation"
    model: str
    file: str
    n: int
    exact_match: float
    contains: float
    samples: list[EvaluationSample]
