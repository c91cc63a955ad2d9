"""Follow a fine-tuning job live: a progress bar fed by its metrics events, and its status changes.

Events are listed newest first and ``after`` pages towards older ones, so new events are found by polling
the first page and skipping the ids already seen.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from diablo_cli.client import DiabloClient

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# Watching stops at a pause too: nothing happens until someone resumes the job.
WATCH_ENDS = TERMINAL_STATUSES | {"paused"}
POLL_INTERVAL_S = 1.0
EVENTS_PAGE = 100
STATUS_STYLES = {
    "succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan", "paused": "magenta",
}  # fmt: skip
LEVEL_STYLES = {"warn": "yellow", "error": "red"}


@dataclass
class WatchState:
    """What the watcher has shown so far."""

    seen: set[str] = field(default_factory=set)
    status: str | None = None


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` or ``2:03``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def new_progress(console: Console) -> Progress:
    """The bar: status, bar, step of total, loss, learning rate, tokens/s and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.fields[total_steps]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("lr {task.fields[lr]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
        transient=False,
    )


def metrics_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The bar's fields from a training metrics event's ``data``."""
    total = data.get("total_steps")
    lr, tps = data.get("learning_rate"), data.get("tokens_per_second")
    return {
        "completed": data["step"],
        "total": total,
        "total_steps": total if total is not None else "?",
        "loss": f"{data['train_loss']:.4f}",
        "lr": f"{lr:.2e}" if isinstance(lr, int | float) else "-",
        "tps": f"{tps:,.0f}" if isinstance(tps, int | float) else "-",
        "eta": format_duration(data.get("eta_seconds")),
    }


def job_eta(job: dict[str, Any], now: float) -> str | None:
    """Time left until the job's ``estimated_finish`` while it runs; ``-`` once it ended; None if unknown."""
    if job.get("status") in TERMINAL_STATUSES:
        return "-"
    finish = job.get("estimated_finish")
    return None if finish is None else format_duration(finish - now)


def _print_status(progress: Progress, status: str) -> None:
    style = STATUS_STYLES.get(status, "bold")
    progress.console.print(f"status: [{style}]{status}[/{style}]")


def _print_event(progress: Progress, event: dict[str, Any]) -> None:
    stamp = dt.datetime.fromtimestamp(event["created_at"]).strftime("%H:%M:%S")
    level = event.get("level", "info")
    style = LEVEL_STYLES.get(level, "dim")
    progress.console.print(f"[dim]{stamp}[/dim] [{style}]{level}[/{style}] {escape(event['message'])}")


def show_events(progress: Progress, task: TaskID, events: list[dict[str, Any]], state: WatchState) -> None:
    """Show the events not seen yet, oldest first: status changes, messages, and metrics on the bar."""
    for event in reversed(events):
        if event["id"] in state.seen:
            continue
        state.seen.add(event["id"])
        data = event.get("data") or {}
        status = data.get("status")
        if event.get("type") == "metrics" and "train_loss" in data and "step" in data:
            progress.update(task, **metrics_fields(data))
        elif isinstance(status, str) and event.get("level") != "error":
            if status != state.status:
                state.status = status
                _print_status(progress, status)
        else:
            _print_event(progress, event)


def poll_once(client: DiabloClient, job_id: str, progress: Progress, task: TaskID, state: WatchState) -> dict:
    """Fetch the newest events, then the job, and show what changed; returns the job.

    Events come first so the job's status is never older than the events shown: the other way round, a job
    that finishes between the two requests would print its final status and then the stale one. A job seen
    finished has its events listed once more, since it may have finished after the first list: the watcher
    stops after this poll, and would otherwise miss the last steps and the final messages (why it failed).
    """
    events = client.list_events(job_id, limit=EVENTS_PAGE)["data"]
    job = client.get_job(job_id)
    if job["status"] in WATCH_ENDS:
        events = client.list_events(job_id, limit=EVENTS_PAGE)["data"]
    show_events(progress, task, events, state)
    if job["status"] != state.status:
        state.status = job["status"]
        _print_status(progress, job["status"])
    eta = job_eta(job, time.time())
    progress.update(task, description=job["status"], **({} if eta is None else {"eta": eta}))
    return job


def print_outcome(console: Console, job: dict[str, Any]) -> None:
    """The job's result: its model name, or why it failed."""
    if job["status"] == "succeeded":
        console.print(f"Fine-tuned model: [bold]{escape(str(job.get('fine_tuned_model')))}[/bold]")
    elif job["status"] == "failed":
        error = job.get("error") or {}
        detail = escape(f"[{error.get('code')}]: {error.get('message', '')}")
        console.print(f"[red]Job failed[/red] {detail}")
    elif job["status"] == "paused":
        console.print(f"Job paused; continue it with `diablo jobs resume {escape(job['id'])}`")
    else:
        console.print(f"Job {escape(job['status'])}")


def watch_job(
    client: DiabloClient, job_id: str, console: Console, interval: float = POLL_INTERVAL_S
) -> dict[str, Any]:
    """Follow ``job_id`` until it succeeds, fails, is cancelled or paused; returns the last job object."""
    state = WatchState()
    progress = new_progress(console)
    fields = {"total_steps": "?", "loss": "-", "lr": "-", "tps": "-", "eta": "-"}
    task = progress.add_task("…", total=None, **fields)
    with progress:
        while True:
            job = poll_once(client, job_id, progress, task, state)
            if job["status"] in WATCH_ENDS:
                break
            time.sleep(interval)
    print_outcome(console, job)
    return job
