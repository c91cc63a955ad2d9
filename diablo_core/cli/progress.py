"""A training callback that draws a rich progress bar with loss, learning rate, speed and ETA."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from diablo_core.training.callbacks import TrainingCallback, TrainingProgress


class RichProgress(TrainingCallback):
    """Shows training progress on a console; use as a context manager around ``train``.

    On a terminal it draws a live bar; otherwise (a log file) it prints one line per 2% of the run.
    """

    def __init__(self, console: Console):
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bar.add_task("train", total=None, stats="")

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.bar.stop()

    def on_progress(self, progress: TrainingProgress) -> None:
        stats = (
            f"loss {progress.loss:.4f} acc {progress.accuracy:.3f} lr {progress.learning_rate:.2e} "
            f"{progress.tokens_per_second:,.0f} tok/s epoch {progress.epoch}"
        )
        self.bar.update(self.task, completed=progress.step, total=progress.total_steps, stats=stats)
        if not self.console.is_terminal and progress.step % max(1, progress.total_steps // 50) == 0:
            eta = f"eta {progress.eta_seconds:.0f} s"
            self.console.print(f"step {progress.step}/{progress.total_steps} {stats} {eta}", highlight=False)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.console.print(f"step {step}: eval loss {metrics['loss']:.4f} accuracy {metrics['accuracy']:.3f}")

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self.console.print(f"step {step}: checkpoint {path}")
