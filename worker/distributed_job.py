"""A job on several devices: the worker launches the job's ranks, watches them and settles what they leave.

When a job spans more than one device (``DIABLO_DEVICES_PER_JOB``, or every GPU of a CUDA worker), the worker
process that claimed it keeps its lease (``worker.lease``, renewed by a thread as for any job) and starts
the ranks with ``worker.rank_group.RankGroup`` running ``python -m worker.rank_entry``. Rank 0 trains like a
single-process job does: it reports progress, heartbeats and events, writes checkpoints and the adapter
through the lease's fence, and settles the job (succeeded, failed, cancelled, handed back for shutdown);
the other ranks only train.

The worker polls the group. A cancel, a graceful shutdown or a lost lease stops every rank
(``RankGroup.stop``: SIGTERM, which the ranks take as a shutdown request, then SIGKILL after a grace period).
A rank that fails or is killed ends the whole group with a non-zero status; a job the ranks left running
is then handed back and sent again, or failed once it has used up its attempts, never left half running.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diablo_core.devices import Device
from registry.errors import error_object
from registry.jobs import HeartbeatStatus, InvalidTransition, JobStatus, add_event, get_job, transition
from registry.lease import check_lease, hand_back, holds_lease
from registry.queue import enqueue_training
from registry.settings import Settings
from registry.storage import job_dir
from registry.sweeper import DEFAULT_MAX_ATTEMPTS
from worker.rank_group import RankGroup, devices_per_job, strategy_for
from worker.resume import find_resume_point
from worker.shutdown import hand_back_for_shutdown, stop_requested

if TYPE_CHECKING:
    from worker.training_job import JobRun

logger = logging.getLogger(__name__)
RANK_MODULE = "worker.rank_entry"
POLL_INTERVAL_S = 0.5
# Rank 0 settled the job (or the lease is gone): the group ends by itself, or is stopped after this long.
SETTLED_GRACE_S = 30.0
# SIGTERM to SIGKILL: time for rank 0 to finish its step, checkpoint it and settle the job.
STOP_GRACE_S = 30.0
LOG_TAIL_CHARS = 4000
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def job_ranks(settings: Settings, device: Device, strategy: str) -> int:
    """Processes a job runs as: the devices per job, or 1 when the job's ``strategy`` is ``none``."""
    ranks = devices_per_job(settings.devices_per_job, device.name)
    return 1 if strategy_for(ranks, strategy) == "none" else ranks


def describe(ranks: int, strategy: str, device: Device) -> str:
    """The job event that names the world: ``Training on 2 processes (ddp, cpu)``."""
    kind = "cuda" if device.is_cuda else device.name
    return f"Training on {ranks} processes ({strategy}, {kind})"


def rank_env(settings: Settings) -> dict[str, str]:
    """The ranks' environment: this process's, with the worker's settings as ``DIABLO_*`` variables."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIABLO_")}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"DIABLO_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def run_ranks(run: JobRun, requested: str, ranks: int) -> str | None:
    """Train the job on ``ranks`` processes; return its status afterwards (None: no longer ours)."""
    assert run.device is not None  # resolved by the caller
    strategy = strategy_for(ranks, requested)
    _event(run, describe(ranks, strategy, run.device))
    log = job_dir(run.settings.adapters_dir, run.job.id) / "ranks.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [run.job.id, run.worker_id, strategy]
    group = RankGroup.start(ranks, RANK_MODULE, args, env=rank_env(run.settings), log=log)
    logger.info("job %s: started %d ranks (%s); their output goes to %s", run.job.id, ranks, strategy, log)
    try:
        reason = watch(run, group)
    finally:
        code = group.stop(STOP_GRACE_S) if group.poll() is None else group.poll()
    if code != 0 and reason is None:
        logger.warning("job %s: ranks ended with status %s; last output:\n%s", run.job.id, code, _tail(log))
    return settle(run, code, reason)


def watch(run: JobRun, group: RankGroup) -> str | None:
    """Poll until the group ends or must stop; return why the worker stopped it (None: it ended by itself)."""
    while group.poll() is None:
        reason = _stop_reason(run)
        if reason == "settled":
            try:
                group.wait(SETTLED_GRACE_S)
            except subprocess.TimeoutExpired:  # a rank hangs after rank 0 settled the job
                logger.warning("job %s: ranks still running after the job was settled", run.job.id)
            return reason
        if reason is not None:
            logger.info("job %s: stopping every rank (%s)", run.job.id, reason)
            group.stop(STOP_GRACE_S)
            return reason
        time.sleep(POLL_INTERVAL_S)
    return None


def _stop_reason(run: JobRun) -> str | None:
    if run.lease.lost:
        return "settled"
    with run.sessions() as session:
        status = check_lease(session, run.job.id, run.worker_id, renew=False)
    if status == HeartbeatStatus.LOST:  # rank 0 finished the job, or another worker holds it
        return "settled"
    if status == HeartbeatStatus.CANCEL_REQUESTED:
        return "cancelled"
    return "shutdown" if stop_requested() else None


def settle(run: JobRun, code: int, reason: str | None) -> str | None:
    """The job's status once its ranks ended; a job they left running is handed back, retried or failed."""
    with run.sessions.begin() as session:
        job = get_job(session, run.job.id)
        if job is not None and not holds_lease(job, run.worker_id):
            if code != 0 and reason is None and job.status == JobStatus.QUEUED:
                _send_again(run)  # a rank handed it back on a database failure: no Celery retry follows
            return job.status if job.worker_id in (None, run.worker_id) else None
        if reason == "shutdown":
            point = find_resume_point(session, run.job.id)
    if job is None:
        return None
    if reason == "shutdown":
        return hand_back_for_shutdown(run.sessions, run.job.id, run.worker_id, point.step, run.settings)
    return _settle_failed_group(run, code)


def _settle_failed_group(run: JobRun, code: int) -> str | None:
    """Retry a job whose ranks failed (or cancel it when asked); fail it once it has used up its attempts."""
    with run.sessions.begin() as session:
        job = get_job(session, run.job.id)
        if not holds_lease(job, run.worker_id):
            return None
        assert job is not None
        try:
            if job.cancel_requested or job.attempts < DEFAULT_MAX_ATTEMPTS:
                message = f"A training process failed (exit status {code}); the job will be retried"
                status = hand_back(session, job.id, run.worker_id, message, level="warn")
            else:
                transition(session, job, JobStatus.FAILED, _ranks_failed_error(code, job.attempts))
                status = JobStatus(job.status)
        except InvalidTransition as error:
            return error.current
    if status == JobStatus.QUEUED:
        _send_again(run)
    return status


def _ranks_failed_error(code: int, attempts: int) -> dict[str, Any]:
    message = (
        f"A training process failed (exit status {code}) on each of {attempts} attempts; "
        "the worker logs have details."
    )
    return error_object("internal_error", message)


def _send_again(run: JobRun) -> None:
    try:
        enqueue_training(run.job.id, run.settings)
    except Exception:
        logger.exception("job %s: could not re-send it; the sweeper sends it once it has waited", run.job.id)


def _event(run: JobRun, message: str) -> None:
    with run.sessions.begin() as session:
        add_event(session, run.job.id, "info", message)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no output)"
