"""Measured training speed per base model, and the estimates made from it."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from registry.throughput import (
    DEFAULT_TOKENS_PER_BYTE,
    DEFAULT_TOKENS_PER_SECOND,
    MEAN_OVER,
    estimate_job,
    find_throughput,
    record_throughput,
)


def test_the_first_job_sets_the_numbers_and_later_ones_average_in(session: Session) -> None:
    record_throughput(session, "base", "bf16", 100.0, 0.5)
    record_throughput(session, "base", "bf16", 200.0, None)
    session.commit()
    row = find_throughput(session, "base")
    assert row is not None
    assert (row.jobs, row.tokens_per_second, row.tokens_per_byte) == (2, 150.0, 0.5)
    for _ in range(2 * MEAN_OVER):
        record_throughput(session, "base", "bf16", 1000.0, 0.5)
    assert row.tokens_per_second > 900.0  # recent jobs dominate once MEAN_OVER have run


def test_unusable_measurements_are_ignored(session: Session) -> None:
    for value in (0.0, -1.0, float("nan"), float("inf")):
        record_throughput(session, "base", "fp32", value, 0.3)
    assert find_throughput(session, "base") is None


def test_lookup_by_precision_or_the_most_recent(session: Session) -> None:
    record_throughput(session, "base", "fp32", 10.0, None)
    record_throughput(session, "base", "bf16", 30.0, None)
    session.flush()
    find_throughput(session, "base", "bf16").updated_at += 5
    assert find_throughput(session, "base", "fp32").tokens_per_second == 10.0
    assert find_throughput(session, "base").precision == "bf16"
    assert find_throughput(session, "other") is None


def test_an_estimate_without_measurements_uses_and_names_the_defaults() -> None:
    estimate = estimate_job(None, file_bytes=4000, num_examples=40, total_steps=30, batch_size=4)
    # 30 steps of 4 examples = 3 passes over a 4000-byte file at 0.25 tokens/byte.
    assert estimate.estimated_tokens == round(4000 * DEFAULT_TOKENS_PER_BYTE * 3)
    assert estimate.estimated_duration_seconds == 3000 / DEFAULT_TOKENS_PER_SECOND
    assert (estimate.basis, estimate.precision, estimate.jobs_measured) == ("default", None, 0)
    assert "default" in estimate.message


def test_an_estimate_from_measurements(session: Session) -> None:
    record_throughput(session, "base", "bf16", 400.0, 0.5)
    estimate = estimate_job(
        find_throughput(session, "base"), file_bytes=1000, num_examples=10, total_steps=5, batch_size=2
    )
    assert (estimate.estimated_tokens, estimate.estimated_duration_seconds) == (500, 2)
    assert (estimate.basis, estimate.precision, estimate.jobs_measured) == ("measured", "bf16", 1)
    assert estimate.message == "From 1 finished job(s) on this model at bf16"
    assert estimate.tokens_per_second == pytest.approx(400.0)
