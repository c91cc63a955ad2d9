"""Bounded load test on loopback: concurrent tenants polling their jobs and chatting with their adapters.

Starts the API (uvicorn on a free port, a temporary data dir, auth on, the model preloaded on the CPU, no
worker, so jobs stay queued) on SQLite or ``--database-url``. Each of ``--tenants`` projects gets an API
key, ``--adapters`` random DiaBlo adapters of the served weights (``save_adapter``, registered under the
project) and ``--jobs`` jobs created over HTTP. After one warm-up request per model and tenant, each tenant
runs ``--pollers`` clients reading its jobs (one read per ``--poll-interval`` s) and ``--chatters``
clients sending chat completions back to back (its adapters and the base model in turn, ``max_tokens`` 16,
temperature 0), for ``--duration`` s or ``--max-requests`` requests. Every ``--probe-every``-th request of
a client (its first too) checks isolation: another tenant's job or adapter must answer 404. Any 5xx
answer or isolation failure makes the exit status 1. ``--flood N`` runs the two-project mode instead
(``benchmarks/flood_load.py``): B's latency alone, then while A keeps N requests in flight.

    .venv/bin/python benchmarks/load_test.py                      # the default model, SQLite registry
    .venv/bin/python benchmarks/load_test.py --model tiny --duration 10 --json benchmarks/out/load.json
    .venv/bin/python benchmarks/load_test.py --model tiny --flood 60 --pace 0.5 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from flood_load import flood_failures, flood_markdown, run_flood  # a sibling script module
from latency import bearer_client, latency_cells, latency_summary, run_failures, statuses_cell
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE, read_adapter_config, save_adapter
from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo
from diablo_core.models.loading import ensure_default_checkpoint, load_base_model
from registry.api_keys import create_api_key
from registry.artifacts import register_adapter
from registry.base_models import DEFAULT_CHECKPOINT_DIR, DEFAULT_MODEL_ID
from registry.db import session_scope
from registry.storage import file_sha256, safe_dir_name

ROOT = Path(__file__).resolve().parents[1]
TINY = "tiny"
EXAMPLE = {"messages": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]}
QUESTIONS = ["What is the capital of France?", "Name a colour.", "Count to five.", "Say hello politely."]
POLL, CHAT = "poll own job (GET)", "chat completion (POST)"
PROBE_POLL, PROBE_CHAT = "isolation: other tenant's job (GET)", "isolation: other tenant's adapter (chat)"


@dataclass
class Tenant:
    """One project: its key, its adapters (model name: directory) and its jobs."""

    project: str
    api_key: str = ""
    adapters: dict[str, Path] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)


@dataclass
class Kind:
    """What one kind of request saw: latencies (ms), answers by status, completion tokens."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    tokens: int = 0
    unexpected: int = 0  # isolation probes that did not answer 404

    def summary(self, name: str, wall_s: float) -> dict[str, Any]:
        return {
            "kind": name,
            **latency_summary(self.latencies_ms),
            "req_per_s": len(self.latencies_ms) / wall_s if wall_s else math.nan,
            "statuses": dict(sorted(self.statuses.items())),
            "completion_tokens": self.tokens,
            "tokens_per_s": self.tokens / wall_s if wall_s and self.tokens else None,
            "isolation_failures": self.unexpected,
        }


def prepare_model(args: argparse.Namespace, data_dir: Path) -> str:
    """Put the served model under ``data_dir/models``; return its model id."""
    models = data_dir / "models"
    models.mkdir(parents=True)
    if args.model == "default":  # link the converted checkpoint of --models-from (converted once there)
        (models / DEFAULT_CHECKPOINT_DIR).symlink_to(ensure_default_checkpoint(args.models_from))
        return DEFAULT_MODEL_ID
    # A 2-layer random Llama with the default model's tokenizer: the service's overhead, not the model's.
    tokenizer = AutoTokenizer.from_pretrained(ensure_default_checkpoint(args.models_from))
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    config.num_key_value_heads, config.vocab_size = 2, len(tokenizer)
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(models / TINY)
    tokenizer.save_pretrained(models / TINY)
    return TINY


def write_adapters(args: argparse.Namespace, data_dir: Path, tenants: list[Tenant], model_id: str) -> str:
    """Save ``args.adapters`` random adapters of the served weights per tenant; return the weights' hash."""
    source = "default" if args.model == "default" else str(data_dir / "models" / TINY)
    loaded = load_base_model(source, data_dir=data_dir)
    apply_diablo(loaded.model, DiaBloConfig(dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    for tenant in tenants:
        for index in range(args.adapters):
            with torch.no_grad():
                for name, parameter in loaded.model.named_parameters():
                    if name.endswith(".blocks"):  # small values: only the shapes matter for speed
                        parameter.copy_(torch.randn(parameter.shape, generator=generator) * 1e-3)
            name = f"ft:{model_id}:{tenant.project}-{index}:{secrets.token_hex(3)}"
            directory = data_dir / "adapters" / safe_dir_name(name)
            tenant.adapters[name] = save_adapter(loaded.model, directory, loaded.identity)
    fingerprint = loaded.identity.content_hash
    del loaded
    gc.collect()
    return fingerprint


def register_tenants(database_url: str, tenants: list[Tenant], model_id: str, fingerprint: str) -> None:
    """Create each tenant's API key and register its adapters under its project."""
    with session_scope(database_url) as session:
        for tenant in tenants:
            tenant.api_key = create_api_key(session, tenant.project, "load test")[1]
            for name, directory in tenant.adapters.items():
                weights = directory / WEIGHTS_FILE
                register_adapter(
                    session,
                    name=name,
                    job_id=None,
                    base_model=model_id,
                    storage_path=str(directory),
                    sha256=file_sha256(weights),
                    size_bytes=weights.stat().st_size,
                    base_model_fingerprint=fingerprint,
                    config=read_adapter_config(directory),
                    project_id=tenant.project,
                )


def server_env(args: argparse.Namespace, data_dir: Path, model_id: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIABLO_")}
    env |= {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}  # torch's intra-op threads
    return env | {
        "DIABLO_DATA_DIR": str(data_dir),
        "DIABLO_DATABASE_URL": args.database_url or f"sqlite:///{data_dir / 'registry.db'}",
        "DIABLO_QUEUE_NAME": f"diablo-load-{secrets.token_hex(4)}",
        "DIABLO_AUTH": "on",
        "DIABLO_DEFAULT_MODEL": "default" if model_id == DEFAULT_MODEL_ID else model_id,
        "DIABLO_DEVICE": "cpu",
        "DIABLO_PRELOAD_MODEL": "true",
        "DIABLO_SWEEP_INTERVAL_S": "0",
    }


@contextlib.contextmanager
def api_server(env: dict[str, str], log: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """Run uvicorn on a free loopback port until the block ends; yield its base URL once it is healthy."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    base_url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout_s
    try:
        while not _healthy(base_url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not become healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=60)


def _healthy(base_url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
    return False


def client_for(base_url: str, tenant: Tenant) -> httpx.AsyncClient:
    return bearer_client(base_url, tenant.api_key, timeout_s=300)


async def create_jobs(http: httpx.AsyncClient, tenant: Tenant, count: int, model: str) -> None:
    """Upload a training file and create ``count`` jobs of the tenant (they stay queued: no worker)."""
    content = "".join(json.dumps(EXAMPLE) + "\n" for _ in range(8)).encode()
    files = {"file": ("load.jsonl", content, "application/jsonl")}
    upload = await http.post("/v1/files", files=files, data={"purpose": "fine-tune"})
    upload.raise_for_status()
    for _ in range(count):
        body = {"model": model, "training_file": upload.json()["id"]}
        response = await http.post("/v1/fine_tuning/jobs", json=body)
        response.raise_for_status()
        tenant.jobs.append(response.json()["id"])


def chat_body(model: str, number: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": QUESTIONS[number % len(QUESTIONS)]}]
    return {"model": model, "messages": messages, "max_tokens": 16, "temperature": 0}


class LoadRun:
    """The measured phase: per-kind results, a deadline and a shared request budget."""

    def __init__(self, args: argparse.Namespace, tenants: list[Tenant], served: str) -> None:
        self.args, self.tenants, self.served = args, tenants, served
        self.kinds: dict[str, Kind] = {name: Kind() for name in (POLL, CHAT, PROBE_POLL, PROBE_CHAT)}
        self.deadline, self.budget = 0.0, args.max_requests
        self.loads: list[float] = []

    def _take(self) -> bool:
        """Take one request from the budget; False once the budget or the time is spent."""
        self.budget -= 1
        return self.budget >= 0 and time.monotonic() <= self.deadline

    def _other(self, index: int) -> Tenant:
        return self.tenants[(index + 1) % len(self.tenants)]

    async def _send(self, kind: str, http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> None:
        start = time.perf_counter()
        response = await http.request(method, url, **kw)
        record = self.kinds[kind]
        record.latencies_ms.append((time.perf_counter() - start) * 1000)
        record.statuses[response.status_code] += 1
        if kind in (PROBE_POLL, PROBE_CHAT):
            record.unexpected += response.status_code != 404
        elif kind == CHAT and response.status_code == 200:
            record.tokens += response.json()["usage"]["completion_tokens"]

    async def poller(self, http: httpx.AsyncClient, index: int, seat: int) -> None:
        tenant, number = self.tenants[index], seat
        while self._take():
            began = time.monotonic()
            if number % self.args.probe_every == 0:
                job = self._other(index).jobs[number % self.args.jobs]
                await self._send(PROBE_POLL, http, "GET", f"/v1/fine_tuning/jobs/{job}")
            else:
                job = tenant.jobs[number % len(tenant.jobs)]
                await self._send(POLL, http, "GET", f"/v1/fine_tuning/jobs/{job}")
            number += 1
            await asyncio.sleep(max(0.0, self.args.poll_interval - (time.monotonic() - began)))

    async def chatter(self, http: httpx.AsyncClient, index: int, seat: int) -> None:
        models, number = [*self.tenants[index].adapters, self.served], seat
        while self._take():
            if number % self.args.probe_every == 0:
                other = list(self._other(index).adapters)[number % self.args.adapters]
                await self._send(
                    PROBE_CHAT, http, "POST", "/v1/chat/completions", json=chat_body(other, number)
                )
            else:
                body = chat_body(models[number % len(models)], number)
                await self._send(CHAT, http, "POST", "/v1/chat/completions", json=body)
            number += 1

    async def run(self, clients: list[httpx.AsyncClient]) -> float:
        """Run every tenant's clients until the deadline or the budget; return the wall time."""
        self.deadline, began = time.monotonic() + self.args.duration, time.monotonic()
        pairs = list(enumerate(clients))
        tasks = [self.poller(http, i, seat) for i, http in pairs for seat in range(self.args.pollers)]
        tasks += [self.chatter(http, i, seat) for i, http in pairs for seat in range(self.args.chatters)]
        await asyncio.gather(self._sample_load(), *tasks)
        return time.monotonic() - began

    async def _sample_load(self) -> None:
        """The machine's 1-minute load average, once a second (the machine may be shared)."""
        while time.monotonic() < self.deadline and self.budget > 0:
            self.loads.append(os.getloadavg()[0])
            await asyncio.sleep(1.0)


async def drive(base_url: str, args: argparse.Namespace, tenants: list[Tenant], served: str) -> dict:
    """Create the jobs, warm every model up once per tenant, then run the measured phase."""
    clients = [client_for(base_url, tenant) for tenant in tenants]
    try:
        for http, tenant in zip(clients, tenants, strict=True):
            await create_jobs(http, tenant, args.jobs, "default" if served == DEFAULT_MODEL_ID else served)
        warm = [
            http.post("/v1/chat/completions", json=chat_body(model, 0))
            for http, tenant in zip(clients, tenants, strict=True)
            for model in [*tenant.adapters, served]
        ]
        for response in await asyncio.gather(*warm):
            response.raise_for_status()  # the warm-up loads every adapter once; it must succeed
        if args.flood:
            began, models = time.monotonic(), [[*tenant.adapters, served] for tenant in tenants]
            flood = await run_flood(clients[:2], models[:2], args, chat_body)
            return flood | {"wall_s": time.monotonic() - began, "load_average_1min": []}
        load = LoadRun(args, tenants, served)
        wall_s = await load.run(clients)
    finally:
        await asyncio.gather(*(http.aclose() for http in clients))
    results = [kind.summary(name, wall_s) for name, kind in load.kinds.items()]
    return {"wall_s": wall_s, "load_average_1min": load.loads, "results": results}


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| kind | requests | p50 ms | p99 ms | max ms | req/s | answers by status | tokens/s |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in results:
        tokens = f"{row['tokens_per_s']:.1f}" if row["tokens_per_s"] else "-"
        lines.append(
            f"| {row['kind']} | {latency_cells(row)} | {row['req_per_s']:.1f} | "
            f"{statuses_cell(row['statuses'])} | {tokens} |"
        )
    return "\n".join(lines)


def failures(results: list[dict[str, Any]]) -> list[str]:
    """What makes the run fail: any 5xx answer, any isolation probe answered other than 404."""
    return run_failures(results, _isolation_problem)


def _isolation_problem(row: dict[str, Any]) -> str:
    return f"{row['isolation_failures']} probes not answered 404" if row["isolation_failures"] else ""


def report(args: argparse.Namespace, outcome: dict[str, Any]) -> None:
    """Print the table, the run's shape and the machine's load; write ``--json``."""
    loads, before = outcome["load_average_1min"] or [math.nan], outcome["load_before"]
    print(flood_markdown(outcome["results"]) if args.flood else markdown(outcome["results"]))
    tenants = 2 if args.flood else args.tenants
    shape = f"{tenants} tenants, {outcome['model']}, torch threads {args.threads or 'default'}"
    print(f"measured phase: {outcome['wall_s']:.1f} s, {shape}")
    print(
        f"load average before (1/5/15 min): {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}; 1-min during: "
        f"mean {sum(loads) / len(loads):.2f}, max {max(loads):.2f}; {os.cpu_count()} CPUs"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        context = {key: str(value) for key, value in vars(args).items() if key != "json"}
        args.json.write_text(json.dumps({"args": context} | outcome, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["default", "tiny"], default="default", help="the served model")
    parser.add_argument("--models-from", type=Path, default=ROOT / "data", help="has the default model")
    parser.add_argument("--threads", type=int, help="the API's torch threads (default: torch's choice)")
    parser.add_argument("--database-url", help="registry of the started API (default: SQLite in a temp dir)")
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--adapters", type=int, default=2, help="adapters per tenant")
    parser.add_argument("--jobs", type=int, default=3, help="queued jobs per tenant")
    parser.add_argument("--pollers", type=int, default=2, help="status-polling clients per tenant")
    parser.add_argument("--chatters", type=int, default=1, help="chat clients per tenant")
    parser.add_argument("--poll-interval", type=float, default=0.25, help="seconds between a poller's reads")
    parser.add_argument("--probe-every", type=int, default=5, help="every n-th request checks isolation")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of the measured phase")
    parser.add_argument("--max-requests", type=int, default=20_000, help="requests of the measured phase")
    parser.add_argument("--flood", type=int, default=0, help="two-project mode: A's requests in flight")
    parser.add_argument("--pace", type=float, default=0.5, help="two-project mode: B's request interval (s)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.tenants < 2 or min(args.adapters, args.jobs, args.probe_every) < 1:
        parser.error("isolation needs --tenants >= 2, and --adapters, --jobs, --probe-every >= 1")
    return args


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    count = 2 if args.flood else args.tenants  # the two-project mode: A floods, B is measured
    tenants = [Tenant(f"tenant-{index}-{secrets.token_hex(3)}") for index in range(count)]
    with tempfile.TemporaryDirectory(prefix="diablo-load-") as tmp:
        data_dir = Path(tmp) / "data"
        model_id = prepare_model(args, data_dir)
        fingerprint = write_adapters(args, data_dir, tenants, model_id)
        env = server_env(args, data_dir, model_id)
        with api_server(env, Path(tmp) / "server.log") as base_url:
            register_tenants(env["DIABLO_DATABASE_URL"], tenants, model_id, fingerprint)
            outcome = asyncio.run(drive(base_url, args, tenants, model_id))
    report(args, outcome | {"model": model_id, "load_before": load_before})
    problems = (flood_failures if args.flood else failures)(outcome["results"])
    if problems:
        sys.exit("FAILED: " + "; ".join(problems))


if __name__ == "__main__":
    main()
