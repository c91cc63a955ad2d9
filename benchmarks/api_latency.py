"""API latency under concurrency: job submission (POST) and status polling (GET job), p50/p99.

Starts the API itself (uvicorn on a free loopback port, a temporary data dir, no worker: jobs stay queued)
unless ``--base-url`` names a running one. Each of ``--clients`` concurrent clients (one
``httpx.AsyncClient`` each) sends ``--submits`` job submissions, then ``--polls`` status reads of the jobs
submitted back to back (saturation: latency is then about clients / throughput), then ``--polls`` reads
paced one per ``--interval`` seconds, as polling clients send them (0 skips this phase); every phase stops
early at ``--max-seconds``. Submissions go through the broker: the SQLite broker in the data dir by default,
or ``--broker-url`` (e.g. Redis). A started server also reports the CPU time it spent per request in each
phase (from ``/proc``), next to the client's own. uvicorn runs with the options ``diablo serve`` gives it
(httptools, uvloop, no uvicorn access log) unless ``--server-options`` names others.

    .venv/bin/python benchmarks/api_latency.py                       # SQLite registry + SQLite broker
    .venv/bin/python benchmarks/api_latency.py --server-options="--http h11 --loop asyncio"  # pure Python
    .venv/bin/python benchmarks/api_latency.py --database-url postgresql://postgres@127.0.0.1:5432/bench \\
        --broker-url redis://127.0.0.1:6379/0 --json benchmarks/out/api_latency_pg.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from latency import bearer_client, latency_summary  # a sibling script module

from diablo_cli.serve import API_SERVER_OPTIONS
from registry.api_keys import create_api_key
from registry.db import session_scope

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = {"messages": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]}
JOB_BODY = {"model": "default", "hyperparameters": {"n_epochs": 1}}
Request = Callable[[httpx.AsyncClient, int, int], Awaitable[httpx.Response]]


@dataclass
class Phase:
    """The latencies (ms) and failures of one phase."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    wall_s: float = 0.0
    server_cpu_s: float = math.nan
    client_cpu_s: float = math.nan

    def summary(self) -> dict[str, Any]:
        count = len(self.latencies_ms)
        return {
            "phase": self.name,
            "errors": self.errors,
            **latency_summary(self.latencies_ms, quantiles=(50, 90, 99)),
            "req_per_s": count / self.wall_s if self.wall_s else math.nan,
            "server_cpu_ms_per_req": self.server_cpu_s * 1000 / count if count else math.nan,
            "client_cpu_ms_per_req": self.client_cpu_s * 1000 / count if count else math.nan,
        }


def server_env(data_dir: Path, args: argparse.Namespace) -> dict[str, str]:
    """The started API's settings: a temporary data dir, no sweeps, no cap on a project's queued jobs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIABLO_")}
    env |= {"DIABLO_DATA_DIR": str(data_dir), "DIABLO_SWEEP_INTERVAL_S": "0"}
    env |= {"DIABLO_QUEUE_NAME": args.queue_name, "DIABLO_MAX_CONCURRENT_JOBS_PER_PROJECT": "1000000"}
    env["DIABLO_DATABASE_URL"] = args.database_url or f"sqlite:///{data_dir / 'registry.db'}"
    if args.broker_url:
        env["DIABLO_BROKER_URL"] = args.broker_url
    return env


def process_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux), NaN when unknown."""
    stat = Path(f"/proc/{pid}/stat")
    if pid is None or not stat.exists():
        return math.nan
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def create_key(database_url: str) -> str:
    """An API key of the project "bench" in the started API's registry (already migrated)."""
    with session_scope(database_url) as session:
        return create_api_key(session, "bench")[1]


@contextlib.contextmanager
def api_server(args: argparse.Namespace) -> Iterator[str]:
    """Run uvicorn on a free port with a temporary data dir; yield its base URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="diablo-bench-") as tmp:
        env, log = server_env(Path(tmp), args), Path(tmp) / "server.log"
        command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
        command += ["--port", str(port), *args.server_options.split()]
        with open(log, "wb") as output:
            server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_healthy(base_url, server, log)
            args.server_pid = server.pid
            args.api_key = args.api_key or create_key(env["DIABLO_DATABASE_URL"])
            yield base_url
        finally:
            server.terminate()
            server.wait(timeout=30)


def wait_healthy(base_url: str, server: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the API at {base_url} did not become healthy:\n{log.read_text()[-3000:]}")


async def run_phase(
    name: str, base_url: str, args: argparse.Namespace, count: int, send: Request, pace: float = 0.0
) -> Phase:
    """``args.clients`` concurrent clients send ``count`` requests each, until ``args.max_seconds``.

    With ``pace`` > 0 each client starts a request every ``pace`` seconds (as a polling client does);
    with 0 it sends the next one as soon as the last is answered (a saturation test).
    """
    phase, deadline = Phase(name), time.monotonic() + args.max_seconds
    # The client's own full collections (100+ ms on a busy machine) would count as server latency.
    gc.collect()
    gc.freeze()
    cpu_before, client_cpu_before = process_cpu_s(args.server_pid), time.process_time()

    async def client(index: int) -> None:
        async with client_for(base_url, args) as http:
            await asyncio.sleep(random.uniform(0, pace))  # polling clients are not in step with each other
            for number in range(count):
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter()
                response = await send(http, index, number)
                elapsed = time.perf_counter() - start
                phase.latencies_ms.append(elapsed * 1000)
                phase.errors += response.status_code != 200
                await asyncio.sleep(max(0.0, pace - elapsed))

    began = time.monotonic()
    await asyncio.gather(*(client(index) for index in range(args.clients)))
    phase.wall_s = time.monotonic() - began
    phase.server_cpu_s = process_cpu_s(args.server_pid) - cpu_before
    phase.client_cpu_s = time.process_time() - client_cpu_before
    return phase


def client_for(base_url: str, args: argparse.Namespace) -> httpx.AsyncClient:
    return bearer_client(base_url, args.api_key, timeout_s=60)


async def upload(base_url: str, args: argparse.Namespace) -> str:
    content = "".join(json.dumps(EXAMPLE) + "\n" for _ in range(8)).encode()
    async with client_for(base_url, args) as http:
        files = {"file": ("bench.jsonl", content, "application/jsonl")}
        response = await http.post("/v1/files", files=files, data={"purpose": "fine-tune"})
        response.raise_for_status()
        return response.json()["id"]


async def benchmark(base_url: str, args: argparse.Namespace) -> list[Phase]:
    """Warm up, then measure submissions, then polling of the submitted jobs."""
    body = JOB_BODY | {"training_file": await upload(base_url, args)}
    job_ids: list[str] = []

    async def submit(http: httpx.AsyncClient, _index: int, _number: int) -> httpx.Response:
        response = await http.post("/v1/fine_tuning/jobs", json=body)
        if response.status_code == 200:
            job_ids.append(response.json()["id"])
        return response

    async def poll(http: httpx.AsyncClient, index: int, number: int) -> httpx.Response:
        return await http.get(f"/v1/fine_tuning/jobs/{job_ids[(index * 7919 + number) % len(job_ids)]}")

    warm = argparse.Namespace(**(vars(args) | {"clients": 4}))
    await run_phase("warm-up", base_url, warm, 5, submit)
    submitted = await run_phase("submit job (POST)", base_url, args, args.submits, submit)
    await run_phase("warm-up", base_url, warm, 5, poll)
    polled = await run_phase("poll status (GET job), back to back", base_url, args, args.polls, poll)
    if args.interval <= 0:
        return [submitted, polled]
    label = f"poll status (GET job), every {args.interval:g} s per client"
    paced = await run_phase(label, base_url, args, args.polls, poll, pace=args.interval)
    return [submitted, polled, paced]


def markdown(results: list[dict[str, Any]], clients: int) -> str:
    lines = [
        f"| phase ({clients} concurrent clients) | requests | errors | p50 ms | p90 ms | p99 ms | max ms "
        "| req/s | CPU ms/req: server | client |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        lines.append(
            f"| {row['phase']} | {row['requests']} | {row['errors']} | {row['p50_ms']:.1f} | "
            f"{row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.1f} | {row['req_per_s']:.0f} | "
            f"{row['server_cpu_ms_per_req']:.2f} | {row['client_cpu_ms_per_req']:.2f} |"
        )
    return "\n".join(lines)


def forget_queue(args: argparse.Namespace) -> None:
    """Delete the benchmark's Redis queue (its messages would otherwise wait for a worker forever)."""
    if args.base_url or not (args.broker_url or "").startswith("redis"):
        return
    import redis

    client = redis.Redis.from_url(args.broker_url)
    client.delete(args.queue_name, f"_kombu.binding.{args.queue_name}")
    client.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a running API (default: start one)")
    parser.add_argument("--database-url", help="registry of the started API (default: SQLite in a temp dir)")
    parser.add_argument("--broker-url", help="broker of the started API (default: SQLite in a temp dir)")
    parser.add_argument("--api-key", help="bearer key for --base-url (a started API gets a new one)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--submits", type=int, default=10, help="job submissions per client")
    parser.add_argument("--polls", type=int, default=40, help="status reads per client")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a paced client's polls")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time limit of each phase")
    parser.add_argument(
        "--server-options", default=" ".join(API_SERVER_OPTIONS), help="uvicorn options of the started API"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    args.queue_name, args.server_pid = f"diablo-bench-{secrets.token_hex(4)}", None
    return args


def main() -> None:
    args = parse_args()
    server = contextlib.nullcontext(args.base_url) if args.base_url else api_server(args)
    try:
        with server as base_url:
            phases = asyncio.run(benchmark(base_url, args))
    finally:
        forget_queue(args)
    results = [phase.summary() for phase in phases]
    load = os.getloadavg()
    print(markdown(results, args.clients))
    print(f"load average after the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        context = {k: v for k, v in vars(args).items() if k not in ("json", "api_key", "server_pid")}
        context["load_average"] = load
        args.json.write_text(json.dumps({"args": context, "results": results}, indent=2, default=str))


if __name__ == "__main__":
    main()
