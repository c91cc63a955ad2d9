"""Latency statistics and report pieces shared by the API load benchmarks (api_latency, load_test, flood).

The scripts run as files (``python benchmarks/load_test.py``), so they import this module as a sibling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values; NaN when there are none."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def latency_summary(latencies_ms: list[float], quantiles: tuple[int, ...] = (50, 99)) -> dict[str, Any]:
    """The request count, the ``p<q>_ms`` percentiles and the maximum of some latencies (ms)."""
    ordered = sorted(latencies_ms)
    return {
        "requests": len(ordered),
        **{f"p{q}_ms": percentile(ordered, q) for q in quantiles},
        "max_ms": ordered[-1] if ordered else math.nan,
    }


def latency_cells(row: dict[str, Any]) -> str:
    """``requests | p50 | p99 | max`` of a summary row, for a markdown table."""
    return f"{row['requests']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.1f}"


def statuses_cell(statuses: dict[int, int]) -> str:
    """Answers by status, ``200: 12, 429: 3``; ``-`` when there were none."""
    return ", ".join(f"{code}: {count}" for code, count in statuses.items()) or "-"


def run_failures(results: list[dict[str, Any]], row_problem: Callable[[dict[str, Any]], str]) -> list[str]:
    """What fails a load run: any 5xx answer, and whatever ``row_problem`` finds in a row (empty: nothing)."""
    found = []
    for row in results:
        server_errors = sum(count for code, count in row["statuses"].items() if code >= 500)
        if server_errors:
            found.append(f"{row['kind']}: {server_errors} answers with a 5xx status")
        if problem := row_problem(row):
            found.append(f"{row['kind']}: {problem}")
    return found


def bearer_client(base_url: str, api_key: str | None, timeout_s: float) -> httpx.AsyncClient:
    """An HTTP client of the API that sends ``api_key`` as its bearer token (none when it is empty)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s)
