"""The training callback of a job: metrics events, heartbeats, cancellation, checkpoints in the registry.

``on_progress`` runs after every optimizer step. It always reads the job's row (one cheap SELECT) so a
cancellation or a pause is honoured within one step, but it writes only when something is due: a heartbeat
every ``heartbeat_interval_s`` (besides the lease thread's, ``worker.lease``), a metrics event every step for
runs of up to 200 steps (else about 200 per run). It also stops training when the worker is shutting down
(``worker.shutdown``); a cancel wins over that. Training itself writes the checkpoints (every
``checkpoint_every`` steps and at each epoch's end, all resumable); ``on_checkpoint`` registers each with
the sha256 of its weights, in a transaction that first renews the lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from diablo_core.training.callbacks import TrainingProgress
from registry.artifacts import add_checkpoint, checkpoint_model_name
from registry.job_metrics import api_metrics, checkpoint_metrics, estimated_finish, eval_metrics
from registry.jobs import HeartbeatStatus, add_event
from registry.lease import check_lease
from registry.models import Job, now_unix
from registry.storage import file_sha256
from registry.throughput import record_throughput
from worker.shutdown import stop_requested

logger = logging.getLogger(__name__)
MAX_METRICS_EVENTS = 200


def metrics_interval(total_steps: int) -> int:
    """Steps between metrics events: 1 up to 200 steps, then ``total_steps // 200``."""
    return 1 if total_steps <= MAX_METRICS_EVENTS else max(1, total_steps // MAX_METRICS_EVENTS)


class JobReporter:
    """Reports one job's training to the registry and tells training when to stop.

    Attributes:
        stop_reason: None while training may go on, else ``"cancelled"``, ``"paused"`` (checkpoint and
            release the job as paused), ``"shutdown"`` (this worker is
            shutting down: the job goes back to the queue) or ``"lost"`` (the job is no longer running under
            this worker, so nothing more may be written for it).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        worker_id: str,
        *,
        fine_tuned_model: str,
        heartbeat_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        shutting_down: Callable[[], bool] = stop_requested,
    ) -> None:
        self.sessions, self.job_id, self.worker_id = sessions, job_id, worker_id
        self.fine_tuned_model = fine_tuned_model
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock, self.shutting_down = clock, shutting_down
        self.last_heartbeat = clock()
        self.stop_reason: str | None = None
        # Tokens per second of step time in this attempt so far (training's running figure).
        self.tokens_per_second: float | None = None

    def on_progress(self, progress: TrainingProgress) -> bool:
        """Record the step (when due), renew the lease, and return True to stop training."""
        self.tokens_per_second = progress.tokens_per_second
        with self.sessions.begin() as session:
            status = self._check(session)
            if status != HeartbeatStatus.LOST and self._metrics_due(progress):
                self._record(session, progress)
        return self._note(status)

    def poll(self) -> bool:
        """Check the job (before training starts); True when it must stop: cancelled, shutdown or lost."""
        with self.sessions.begin() as session:
            return self._note(self._check(session))

    def _note(self, status: HeartbeatStatus) -> bool:
        if status == HeartbeatStatus.LOST:
            self.stop_reason = "lost"
        elif status == HeartbeatStatus.CANCEL_REQUESTED:
            self.stop_reason = "cancelled"
        elif status == HeartbeatStatus.PAUSE_REQUESTED and self.stop_reason != "cancelled":
            self.stop_reason = "paused"
        elif self.stop_reason is None and self.shutting_down():
            self.stop_reason = "shutdown"
        return self.stop_reason is not None

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Record an evaluation (validation loss, evaluation-file answers) as a metrics event."""
        if self.stop_reason == "lost":
            return
        data = eval_metrics(step, metrics)
        with self.sessions.begin() as session:
            add_event(session, self.job_id, "info", _eval_message(step, metrics), type="metrics", data=data)

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        """Register a checkpoint directory written at ``step``, if the job is still this worker's."""
        if self.stop_reason == "lost":
            return
        name = checkpoint_model_name(self.fine_tuned_model, step)
        digest = file_sha256(path / WEIGHTS_FILE)  # of the bytes just written and flushed
        with self.sessions.begin() as session:
            if check_lease(session, self.job_id, self.worker_id) == HeartbeatStatus.LOST:
                self.stop_reason = "lost"
                return
            add_checkpoint(
                session,
                self.job_id,
                step,
                name,
                storage_path=str(path),
                metrics=checkpoint_metrics({**metrics, "step": step}),
                sha256=digest,
            )
            add_event(session, self.job_id, "info", f"Checkpoint created at step {step}")

    def record_throughput(
        self, session: Session, model: str, precision: str, tokens_per_byte: float | None
    ) -> None:
        """Fold this attempt's training speed into ``model``'s measurements, which estimate later jobs."""
        if self.tokens_per_second is not None:
            record_throughput(session, model, precision, self.tokens_per_second, tokens_per_byte)

    def _check(self, session: Session) -> HeartbeatStatus:
        """Renew the lease when due; otherwise only read whether the job is still ours and not cancelled."""
        renew = self.clock() - self.last_heartbeat >= self.heartbeat_interval_s
        if renew:
            self.last_heartbeat = self.clock()
        return check_lease(session, self.job_id, self.worker_id, renew=renew)

    @staticmethod
    def _metrics_due(progress: TrainingProgress) -> bool:
        every = metrics_interval(progress.total_steps)
        return progress.step % every == 0 or progress.step in (1, progress.total_steps)

    def _record(self, session: Session, progress: TrainingProgress) -> None:
        data = metrics_data(progress)
        message = f"Step {progress.step}/{progress.total_steps}: training loss={progress.loss:.4f}"
        add_event(session, self.job_id, "info", message, type="metrics", data=data)
        finish = estimated_finish(now_unix(), eta_seconds=progress.eta_seconds)
        values = {"trained_tokens": progress.trained_tokens, "estimated_finish": finish}
        session.execute(update(Job).where(Job.id == self.job_id).values(**values))


def metrics_data(progress: TrainingProgress) -> dict[str, Any]:
    """The data of a step's metrics event."""
    return api_metrics({**asdict(progress), **progress.metrics, "epoch": progress.epoch + 1})


def _eval_message(step: int, metrics: dict[str, float]) -> str:
    """``Step 40: validation loss=0.4321, exact match=0.750, contains=0.875`` (the parts measured)."""
    parts = []
    if "loss" in metrics:
        parts.append(f"validation loss={metrics['loss']:.4f}")
    if "exact_match" in metrics:
        parts.append(f"exact match={metrics['exact_match']:.3f}, contains={metrics['contains']:.3f}")
    return f"Step {step}: {', '.join(parts)}"
