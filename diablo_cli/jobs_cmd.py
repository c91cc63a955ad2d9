"""``diablo jobs create|estimate|list|get|cancel|pause|resume|watch|events|checkpoints``: fine-tuning jobs."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from diablo_cli.client import DEFAULT_BASE_URL, DiabloClient
from diablo_cli.connection import (
    EXIT_FAILED,
    ApiCall,
    ApiKeyOption,
    BaseUrlOption,
    JsonOption,
    api_command,
    connect,
    page_printer,
    print_json,
    print_line,
    stderr_console,
    stdout_console,
)
from diablo_cli.files_cmd import format_time
from diablo_cli.job_watch import POLL_INTERVAL_S, watch_job

app = typer.Typer(help="Create, follow, pause, resume and cancel fine-tuning jobs.", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(help="The id of the job, e.g. ftjob-0123…")]
IntervalOption = Annotated[float, typer.Option(min=0.05, help="Seconds between polls while watching.")]
EXIT_INTERRUPTED = 130
HYPER_HELP = "Left to the API when omitted."
NEpochs = Annotated[int | None, typer.Option("--n-epochs", min=1, help=HYPER_HELP)]
BatchSize = Annotated[int | None, typer.Option("--batch-size", min=1, help=HYPER_HELP)]
Multiplier = Annotated[float | None, typer.Option("--learning-rate-multiplier", min=0.0, help=HYPER_HELP)]
NumBlocks = Annotated[int | None, typer.Option("--num-blocks", min=1, help=HYPER_HELP)]
LearningRate = Annotated[float | None, typer.Option("--learning-rate", min=0.0, help=HYPER_HELP)]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", min=1, help=HYPER_HELP)]
WarmupSteps = Annotated[int | None, typer.Option("--warmup-steps", min=0, help=HYPER_HELP)]
MaxLength = Annotated[
    str | None,
    typer.Option(
        "--max-length",
        help="Tokens per example, or 'auto' (the default): the longest example, within the model's context. "
        "A longer example is refused when the job is created.",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Check the job as creating it would and print its estimate; create nothing."
    ),
]
TargetModules = Annotated[
    str | None, typer.Option("--target-modules", help="Comma list of module names, e.g. q_proj,v_proj.")
]


def split_modules(value: str | None) -> list[str] | None:
    """``"q_proj, v_proj"`` -> ``["q_proj", "v_proj"]``."""
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    if not all(names):
        message = f"expected comma-separated module names, got {value!r}"
        raise typer.BadParameter(message, param_hint="--target-modules")
    return names


def max_length_value(value: str | None) -> int | str | None:
    """``--max-length``: ``"auto"`` or a whole number of tokens (the API checks its bounds)."""
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        message = f"expected 'auto' or a number of tokens, got {value!r}"
        raise typer.BadParameter(message, param_hint="--max-length") from None


def job_body(
    model: str, training_file: str, options: dict[str, Any], hyperparameters: dict[str, Any]
) -> dict[str, Any]:
    """The create request: given fields only, hyperparameters under ``method.diablo``."""
    body = {"model": model, "training_file": training_file}
    body |= {key: value for key, value in options.items() if value is not None}
    chosen = {key: value for key, value in hyperparameters.items() if value is not None}
    if chosen:
        body["method"] = {"type": "diablo", "diablo": {"hyperparameters": chosen}}
    return body


def follow(client: DiabloClient, job_id: str, console: Console, interval: float) -> None:
    """Watch a job to its end; exit 1 unless it succeeded (130 on Ctrl-C, the job goes on)."""
    try:
        job = watch_job(client, job_id, console, interval)
    except KeyboardInterrupt:
        console.print(f"Stopped watching; job {job_id} goes on (`diablo jobs watch {job_id}`).")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if job["status"] != "succeeded":
        raise typer.Exit(EXIT_FAILED)


@app.command()
def create(
    training_file: Annotated[str, typer.Option("--training-file", help="The id of the training file.")],
    validation_file: Annotated[str | None, typer.Option(help="The id of a validation file.")] = None,
    evaluation_file: Annotated[
        str | None,
        typer.Option(help="The id of a file of held-out chat examples to answer at each evaluation."),
    ] = None,
    model: Annotated[str, typer.Option(help="The base model.")] = "default",
    n_epochs: NEpochs = None,
    batch_size: BatchSize = None,
    learning_rate_multiplier: Multiplier = None,
    suffix: Annotated[str | None, typer.Option(help="Up to 64 characters in the model name.")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Random seed (random when omitted).")] = None,
    num_blocks: NumBlocks = None,
    learning_rate: LearningRate = None,
    max_steps: MaxSteps = None,
    warmup_steps: WarmupSteps = None,
    max_length: MaxLength = None,
    target_modules: TargetModules = None,
    dry_run: DryRun = False,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends.")] = False,
    interval: IntervalOption = POLL_INTERVAL_S,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a fine-tuning job; prints only its id on stdout (with --watch, progress goes to stderr)."""
    if dry_run and watch:
        raise typer.BadParameter("a dry run creates no job to watch", param_hint="--watch")
    hyperparameters = {
        "n_epochs": n_epochs, "batch_size": batch_size, "learning_rate_multiplier": learning_rate_multiplier,
        "num_blocks": num_blocks, "learning_rate": learning_rate, "max_steps": max_steps,
        "warmup_steps": warmup_steps, "max_length": max_length_value(max_length),
        "target_modules": split_modules(target_modules),
    }  # fmt: skip
    options = {"validation_file": validation_file, "evaluation_file": evaluation_file}
    options |= {"suffix": suffix, "seed": seed, "dry_run": dry_run or None}
    err = stderr_console()
    with connect(base_url, api_key) as client:
        job = client.create_job(job_body(model, training_file, options, hyperparameters))
        if json_output:
            print_json(job)
        elif dry_run:
            print_line(estimate_line(job))
        else:
            err.print(f"Created {job['id']}: {job['status']}, model {escape(job['model'])}")
            typer.echo(job["id"])
        if watch:
            follow(client, job["id"], err, interval)


def estimate_line(estimate: dict[str, Any]) -> str:
    """Steps, tokens and duration, and whether the speed behind them was measured or assumed."""
    minutes = estimate["estimated_duration_seconds"] / 60
    line = (
        f"{estimate['total_steps']} steps, about {estimate['estimated_tokens']:,} tokens, "
        f"about {minutes:.1f} min at {estimate['tokens_per_second']:g} tokens/s"
    )
    method = estimate.get("method") or {}
    max_length = method.get(method.get("type"), {}).get("hyperparameters", {}).get("max_length")
    if max_length is not None:  # "auto": the worker counts the examples (the API has no tokenizer)
        line += f", max_length {max_length}"
    return f"{line} ({estimate['message']})"


@api_command(app)
def estimate(
    training_file: Annotated[str, typer.Option("--training-file", help="The id of the training file.")],
    model: Annotated[str, typer.Option(help="The base model.")] = "default",
    n_epochs: NEpochs = None,
    batch_size: BatchSize = None,
    learning_rate_multiplier: Multiplier = None,
    num_blocks: NumBlocks = None,
    max_steps: MaxSteps = None,
    max_length: MaxLength = None,
) -> ApiCall:
    """Estimate a job's steps, tokens and duration before creating it (nothing is created)."""
    hyperparameters = {
        "n_epochs": n_epochs, "batch_size": batch_size, "learning_rate_multiplier": learning_rate_multiplier,
        "num_blocks": num_blocks, "max_steps": max_steps, "max_length": max_length_value(max_length),
    }  # fmt: skip
    body = job_body(model, training_file, {}, hyperparameters)
    return ApiCall(lambda client: client.estimate_job(body), lambda answer: print_line(estimate_line(answer)))


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    """The jobs as a table, newest first."""
    table = Table("id", "status", "model", "fine-tuned model", "created", "progress", box=None)
    for job in jobs:
        progress = job.get("progress") or {}
        step = f"{progress['step']}/{progress.get('total_steps') or '?'}" if progress else "-"
        created = format_time(job["created_at"])
        fine_tuned = job.get("fine_tuned_model") or "-"
        table.add_row(job["id"], job["status"], job["model"], fine_tuned, created, step)
    return table


@api_command(app, "list")
def list_jobs(
    limit: Annotated[int, typer.Option(min=1, max=100, help="The most jobs to list.")] = 20,
    after: Annotated[str | None, typer.Option(help="List jobs older than this job id.")] = None,
) -> ApiCall:
    """List fine-tuning jobs, newest first."""
    return ApiCall(lambda client: client.list_jobs(limit, after), page_printer(jobs_table, "No jobs."))


def job_details(job: dict[str, Any]) -> Table:
    """One job as a two-column table of its main fields."""
    table = Table(show_header=False, box=None)
    error = job.get("error") or {}
    progress = job.get("progress") or {}
    rows = {
        "id": job["id"], "status": job["status"], "model": job["model"],
        "fine-tuned model": job.get("fine_tuned_model"), "training file": job["training_file"],
        "validation file": job.get("validation_file"), "evaluation file": job.get("evaluation_file"),
        "hyperparameters": job.get("hyperparameters"),
        "progress": f"{progress['step']}/{progress.get('total_steps')}" if progress else None,
        "trained tokens": job.get("trained_tokens"), "created": format_time(job["created_at"]),
        "estimated finish": format_time(job.get("estimated_finish")) if job["status"] == "running" else None,
        "finished": format_time(job.get("finished_at")),
        "error": f"{error.get('code')}: {error.get('message')}" if error else None,
    }  # fmt: skip
    for name, value in rows.items():
        table.add_row(name, escape("-" if value is None else str(value)))
    return table


@api_command(app)
def get(job_id: JobId) -> ApiCall:
    """Show a job."""
    return ApiCall(
        lambda client: client.get_job(job_id), lambda job: stdout_console().print(job_details(job))
    )


def print_status(job: dict[str, Any]) -> None:
    """The summary of a job command: ``<id>: <status>``."""
    print_line(f"{job['id']}: {job['status']}")


@api_command(app)
def cancel(job_id: JobId) -> ApiCall:
    """Cancel a job (a running one stops within one training step)."""
    return ApiCall(lambda client: client.cancel_job(job_id), print_status)


@api_command(app)
def pause(job_id: JobId) -> ApiCall:
    """Pause a job: a running one checkpoints at its next step and frees its worker."""
    return ApiCall(lambda client: client.pause_job(job_id), print_status)


@api_command(app)
def resume(job_id: JobId) -> ApiCall:
    """Resume a paused job from its newest checkpoint."""
    return ApiCall(lambda client: client.resume_job(job_id), print_status)


@app.command()
def watch(
    job_id: JobId,
    interval: IntervalOption = POLL_INTERVAL_S,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Follow a job until it ends: progress, loss, learning rate, tokens/s, ETA and status changes."""
    with connect(base_url, api_key) as client:
        follow(client, job_id, stdout_console(), interval)


def events_table(events: list[dict[str, Any]]) -> Table:
    """The events oldest first, as a log reads."""
    table = Table("created", "level", "message", box=None)
    for event in reversed(events):
        table.add_row(format_time(event["created_at"]), event["level"], Text(event["message"]))
    return table


@api_command(app)
def events(
    job_id: JobId,
    limit: Annotated[int, typer.Option(min=1, max=100, help="The most recent events to show.")] = 50,
) -> ApiCall:
    """Show a job's most recent events, oldest first."""
    return ApiCall(lambda client: client.list_events(job_id, limit), page_printer(events_table, "No events."))


def checkpoints_table(checkpoints: list[dict[str, Any]]) -> Table:
    """The checkpoints, newest first: step, servable model name and metrics."""
    table = Table("step", "model", "metrics", "created", box=None)
    for item in checkpoints:
        metrics = ", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                            for key, value in (item.get("metrics") or {}).items())  # fmt: skip
        name = item["fine_tuned_model_checkpoint"]
        # Text, not a markup string: rich would read ":a:" in a model name as an emoji code.
        table.add_row(str(item["step_number"]), Text(name), metrics or "-", format_time(item["created_at"]))
    return table


@api_command(app)
def checkpoints(job_id: JobId) -> ApiCall:
    """List a job's checkpoints; each is a model that chat and export accept."""
    return ApiCall(
        lambda client: client.list_checkpoints(job_id), page_printer(checkpoints_table, "No checkpoints.")
    )
