"""The two-project mode of ``load_test.py`` (``--flood N``): does one project's flood slow another down?

Project B sends one chat completion every ``--pace`` s for ``--duration`` s alone (its solo latency),
then again while project A keeps ``N`` chat completions in flight back to back. The table compares B's
p50/p99 under the flood with its solo ones, measured in the same run on the same server. A's answers are
counted by status (429s are the admission control at work); any 5xx, or any B answer other than 200,
fails the run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from latency import latency_cells, latency_summary, run_failures, statuses_cell  # a sibling

SOLO, UNDER_FLOOD, FLOOD = "B alone", "B during A's flood", "A's flood"


class Latencies:
    """Latencies (ms) and answers by status of one kind of request."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.statuses: dict[int, int] = {}

    async def send(self, http: httpx.AsyncClient, body: dict[str, Any]) -> None:
        began = time.perf_counter()
        response = await http.post("/v1/chat/completions", json=body)
        self.ms.append((time.perf_counter() - began) * 1000)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1

    def summary(self, name: str) -> dict[str, Any]:
        return {"kind": name, **latency_summary(self.ms), "statuses": dict(sorted(self.statuses.items()))}


async def _paced(http: httpx.AsyncClient, models: list[str], args: Any, record: Latencies, body) -> None:
    """One request every ``args.pace`` s (open loop: a slow answer does not delay the next request)."""
    sends, number, end = [], 0, time.monotonic() + args.duration
    while time.monotonic() < end:
        sends.append(asyncio.create_task(record.send(http, body(models[number % len(models)], number))))
        number += 1
        await asyncio.sleep(args.pace)
    await asyncio.gather(*sends)


async def _flooder(http: httpx.AsyncClient, models: list[str], seat: int, stop: asyncio.Event, record, body):
    number = seat
    while not stop.is_set():
        await record.send(http, body(models[number % len(models)], number))
        number += 1


async def run_flood(clients: list[httpx.AsyncClient], models: list[list[str]], args: Any, body) -> dict:
    """B alone, then B while A floods (``clients``, ``models``: A's, B's; ``body(model, n)``: a request)."""
    (flood_http, steady_http), (flood_models, steady_models) = clients, models
    solo, under, flood = Latencies(), Latencies(), Latencies()
    await _paced(steady_http, steady_models, args, solo, body)
    stop = asyncio.Event()
    floods = [
        asyncio.create_task(_flooder(flood_http, flood_models, seat, stop, flood, body))
        for seat in range(args.flood)
    ]
    await asyncio.sleep(min(1.0, args.duration / 4))  # the flood fills the queue before B is measured
    await _paced(steady_http, steady_models, args, under, body)
    stop.set()
    await asyncio.gather(*floods)
    return {"results": [solo.summary(SOLO), under.summary(UNDER_FLOOD), flood.summary(FLOOD)]}


def flood_markdown(results: list[dict[str, Any]]) -> str:
    """The table, then B's slowdown under the flood at p50 and p99."""
    lines = [
        "| requests of | requests | p50 ms | p99 ms | max ms | answers by status |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in results:
        lines.append(f"| {row['kind']} | {latency_cells(row)} | {statuses_cell(row['statuses'])} |")
    solo, under = results[0], results[1]
    lines.append(
        f"B under the flood / alone: p50 {under['p50_ms'] / solo['p50_ms']:.2f}x, "
        f"p99 {under['p99_ms'] / solo['p99_ms']:.2f}x"
    )
    return "\n".join(lines)


def flood_failures(results: list[dict[str, Any]]) -> list[str]:
    """Any 5xx answer; any answer to B other than 200."""
    return run_failures(results, _answers_to_b_other_than_200)


def _answers_to_b_other_than_200(row: dict[str, Any]) -> str:
    wrong = row["kind"] != FLOOD and set(row["statuses"]) - {200}
    return f"answers other than 200: {row['statuses']}" if wrong else ""
