"""How long a job should take: measured training speed per base model and precision, and estimates from it.

Each job that succeeds records what its worker measured (``record_throughput``): tokens per second of step
time, and tokens per byte of its training file under the model's tokenizer. The numbers are running means
over the model's recent jobs (the newest counts 1/``MEAN_OVER``th at least, so a faster machine shows soon).
``estimate_job`` turns a file's size and a job's steps into tokens and a duration; without a measurement it
uses the documented defaults below and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import ModelThroughput, now_unix

# The default model (SmolLM2-135M) trained at about 50 tokens/s of step time on the 2-core CPU of
# docs/benchmarks.md ("Arithmetic example (CPU)"); a GPU is far faster, so this is a cautious start.
DEFAULT_TOKENS_PER_SECOND = 50.0
# JSONL chat data holds about 4 bytes per token (English text; JSON syntax and template tokens even out).
DEFAULT_TOKENS_PER_BYTE = 0.25
MEAN_OVER = 10
MEASURED = "measured"
DEFAULT = "default"


@dataclass(frozen=True)
class JobEstimate:
    """A job's expected size and duration, and where the speed came from."""

    total_steps: int
    estimated_tokens: int
    tokens_per_second: float
    estimated_duration_seconds: int
    basis: str
    precision: str | None
    jobs_measured: int
    message: str


def record_throughput(
    session: Session, model: str, precision: str, tokens_per_second: float, tokens_per_byte: float | None
) -> None:
    """Fold one finished job's measurements into the model's running means (flushed, not committed)."""
    if not math.isfinite(tokens_per_second) or tokens_per_second <= 0:
        return
    row = session.get(ModelThroughput, (model, precision))
    if row is None:
        row = ModelThroughput(model=model, precision=precision, tokens_per_second=tokens_per_second, jobs=0)
        row.tokens_per_byte = tokens_per_byte
        session.add(row)
    weight = 1.0 / min(row.jobs + 1, MEAN_OVER)
    row.tokens_per_second += weight * (tokens_per_second - row.tokens_per_second)
    if tokens_per_byte is not None and tokens_per_byte > 0:
        known = row.tokens_per_byte if row.tokens_per_byte is not None else tokens_per_byte
        row.tokens_per_byte = known + weight * (tokens_per_byte - known)
    row.jobs += 1
    row.updated_at = now_unix()
    session.flush()


def find_throughput(session: Session, model: str, precision: str | None = None) -> ModelThroughput | None:
    """The model's measurement at ``precision``, or its most recent one at any precision (None: unknown)."""
    statement = select(ModelThroughput).where(ModelThroughput.model == model)
    if precision is not None:
        statement = statement.where(ModelThroughput.precision == precision)
    return session.scalars(statement.order_by(ModelThroughput.updated_at.desc()).limit(1)).first()


def estimate_job(
    measured: ModelThroughput | None,
    *,
    file_bytes: int,
    num_examples: int,
    total_steps: int,
    batch_size: int,
    file_tokens: int | None = None,
) -> JobEstimate:
    """Tokens and duration of ``total_steps`` steps of ``batch_size`` examples drawn from the file.

    ``file_tokens``, the file's tokens counted with the model's tokenizer, replaces the tokens-per-byte guess.
    """
    tokens_per_byte = DEFAULT_TOKENS_PER_BYTE
    if measured is not None and measured.tokens_per_byte:
        tokens_per_byte = measured.tokens_per_byte
    tokens_per_second = DEFAULT_TOKENS_PER_SECOND if measured is None else measured.tokens_per_second
    examples_seen = total_steps * batch_size  # the last batch of an epoch may be short: an upper bound
    in_file = file_bytes * tokens_per_byte if file_tokens is None else file_tokens
    tokens = round(in_file * examples_seen / max(num_examples, 1))
    if measured is None:
        per_byte = f" and {DEFAULT_TOKENS_PER_BYTE:g} tokens per byte of data" if file_tokens is None else ""
        message = (
            f"No job on this model has finished yet; assuming the default {DEFAULT_TOKENS_PER_SECOND:g} "
            f"tokens/s{per_byte}"
        )
    else:
        message = f"From {measured.jobs} finished job(s) on this model at {measured.precision}"
    if file_tokens is not None:
        message += f"; the training file's {file_tokens:,} tokens counted with the model's tokenizer"
    return JobEstimate(
        total_steps=total_steps,
        estimated_tokens=tokens,
        tokens_per_second=round(tokens_per_second, 1),
        estimated_duration_seconds=math.ceil(tokens / tokens_per_second),
        basis=DEFAULT if measured is None else MEASURED,
        precision=None if measured is None else measured.precision,
        jobs_measured=0 if measured is None else measured.jobs,
        message=message,
    )
