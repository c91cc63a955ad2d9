"""A job's integrations as training callbacks: Weights & Biases runs (``integrations: [{"type": "wandb"}]``).

Each wandb integration opens one run per job: the job id is its run id (a re-delivered job resumes the same
run) and its name unless ``name`` is given; ``project``, ``entity`` and ``tags`` are passed on, and the
job's resolved hyperparameters are its config. Every metrics step and validation pass is logged under the
API's metric names (``registry.job_metrics``). Without ``WANDB_API_KEY`` in the worker's environment the run
is offline: it is written under ``<data_dir>/wandb/<job id>/`` and can be uploaded later with
``wandb sync``. An integration that cannot start is reported in the job's events and training goes on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from diablo_core.training.callbacks import TrainingProgress
from registry.job_metrics import api_metrics, eval_metrics
from registry.models import Job

logger = logging.getLogger(__name__)
WANDB = "wandb"
API_KEY_ENV = "WANDB_API_KEY"


def wandb_dir(data_dir: Path, job_id: str) -> Path:
    """Where a job's wandb runs are written (offline runs stay there for ``wandb sync``)."""
    return data_dir / WANDB / job_id


class WandbLogger:
    """Logs one job's training to a wandb run (a training callback)."""

    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def start(cls, job: Job, settings: dict[str, Any], directory: Path) -> WandbLogger:
        """Open the job's run (online with ``WANDB_API_KEY``, else offline)."""
        import wandb  # loaded only by jobs that ask for it

        directory.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=settings["project"],
            entity=settings.get("entity"),
            name=settings.get("name") or job.id,
            tags=settings.get("tags"),
            id=job.id,
            resume="allow",
            dir=directory,
            mode="online" if os.environ.get(API_KEY_ENV) else "offline",
            config={"job_id": job.id, "model": job.model, **(job.hyperparameters or {})},
            settings=wandb.Settings(silent=True, console="off", save_code=False),
        )
        return cls(run)

    def on_progress(self, progress: TrainingProgress) -> None:
        data = api_metrics({**asdict(progress), "epoch": progress.epoch + 1})
        self.run.log(data, step=progress.step)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(eval_metrics(step, metrics), step=step)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


@contextmanager
def job_integrations(job: Job, data_dir: Path, warn: Callable[[str], None]) -> Iterator[list[Any]]:
    """The job's integrations as callbacks for ``train``, closed when the block ends.

    Args:
        job: The job, whose ``integrations`` the API validated (``{"type": "wandb", "wandb": {...}}``).
        data_dir: The service's data folder (offline runs are kept under it).
        warn: Records a warning in the job's events (an integration that could not start).
    """
    loggers: list[WandbLogger] = []
    for integration in job.integrations or []:
        if integration.get("type") != WANDB:
            continue  # the API refuses other types
        try:
            loggers.append(WandbLogger.start(job, integration[WANDB], wandb_dir(data_dir, job.id)))
        except Exception as error:
            logger.exception("job %s: the wandb integration could not start", job.id)
            warn(f"The wandb integration could not start ({type(error).__name__}: {error}); training goes on")
    failed = True
    try:
        yield list(loggers)
        failed = False
    finally:
        for item in loggers:
            item.close(failed)
