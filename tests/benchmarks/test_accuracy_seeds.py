"""The seeded DiaBlo-vs-LoRA comparison's statistics (benchmarks/train_accuracy.py) and its default rates."""

from __future__ import annotations

import math

import pytest

from benchmarks.train_accuracy import default_learning_rate, mean_interval, summarize, t_quantile_975


@pytest.mark.parametrize(("df", "expected"), [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (60, 2.000)])
def test_t_quantile_matches_the_printed_tables(df: int, expected: float) -> None:
    assert t_quantile_975(df) == pytest.approx(expected, abs=1e-3)


def test_one_value_has_no_interval() -> None:
    with pytest.raises(ValueError, match="at least 2 values"):
        t_quantile_975(0)


def test_mean_interval_of_three_seeds() -> None:
    row = mean_interval([0.5, 0.6, 0.7])
    assert row["mean"] == pytest.approx(0.6)
    assert row["ci95"] == pytest.approx(4.3027 * 0.1 / math.sqrt(3), rel=1e-4)
    assert row["low"] == pytest.approx(0.6 - row["ci95"]) and row["high"] == pytest.approx(0.6 + row["ci95"])


def _run(task: str, seed: int, diablo: float, lora: float) -> dict:
    return {
        "task": task,
        "seed": seed,
        "results": {"diablo": {"exact_match": diablo}, "lora-matched": {"exact_match": lora}},
    }


def test_summary_pairs_the_methods_by_seed_per_task() -> None:
    runs = [
        _run("arithmetic", 2, 0.70, 0.60),
        _run("arithmetic", 0, 0.50, 0.52),
        _run("arithmetic", 1, 0.60, 0.55),
        _run("words", 0, 0.1, 0.3),
        _run("words", 1, 0.2, 0.3),
    ]
    summary = summarize(runs)
    assert list(summary) == ["arithmetic", "words"]
    arithmetic = summary["arithmetic"]
    assert arithmetic["seeds"] == [0, 1, 2]
    assert arithmetic["diablo"]["per_seed"] == [0.50, 0.60, 0.70]
    assert arithmetic["diablo_minus_lora"]["per_seed"] == pytest.approx([-0.02, 0.05, 0.10])
    assert arithmetic["diablo_minus_lora"]["mean"] == pytest.approx(0.13 / 3)
    assert summary["words"]["diablo_minus_lora"]["mean"] == pytest.approx(-0.15)
    # The paired interval is narrower than the difference of the two unpaired ones would suggest.
    assert summary["words"]["diablo_minus_lora"]["ci95"] == pytest.approx(12.706 * 0.05, rel=1e-3)


def test_each_method_gets_the_services_default_rate() -> None:
    assert default_learning_rate("diablo", 576) == pytest.approx(5e-4 * (64 / 9) ** 0.7)
    assert default_learning_rate("diablo", 4096) == pytest.approx(5e-4)
    assert default_learning_rate("lora-matched", 576) == 3e-4
