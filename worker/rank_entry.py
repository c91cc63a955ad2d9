"""One rank of a job on several devices: ``python -m worker.rank_entry JOB_ID WORKER_ID STRATEGY``.

``worker.distributed_job`` starts one of these per device under torchrun. Every rank loads the job's model
and data as a single-process job does (``worker.training_job``) and trains its shard of each batch. Rank 0
alone speaks for the job, under the lease of the worker that claimed it (``WORKER_ID``; that worker renews
it): progress, heartbeats and events, checkpoints and the adapter through the lease's fence, and the job's
final status. Ranks agree through collectives on whatever would otherwise leave one of them waiting: a
failure while loading, a stop before training, the checkpoint to resume from.

SIGTERM (a cancel, a graceful shutdown or a lost lease, sent by the worker through torchrun's agent) is a
shutdown request: rank 0 stops after its current step, checkpoints it and settles the job.
"""

from __future__ import annotations

import logging
import signal
import sys
from dataclasses import replace
from functools import partial

from diablo_core.data.tokenization import TokenizedExample
from diablo_core.devices import Device, resolve_device
from diablo_core.errors import ConfigError
from diablo_core.models.loading import LoadedModel
from diablo_core.precision.hardware import apply_torch_threads
from diablo_core.spec import ResolvedJobSpec
from diablo_core.training.checkpoints import unfenced
from diablo_core.training.distributed import World, any_rank, from_main, join_world, leave_world
from diablo_core.training.loop import TrainingResult
from registry.db import get_sessionmaker
from registry.jobs import get_job
from registry.logging_setup import configure_logging
from registry.settings import Settings, get_settings
from worker.auto_fit import fit_to_model
from worker.job_config import JobPlan
from worker.job_model import resolve_spec_precision
from worker.lease import JobLease
from worker.progress import JobReporter
from worker.resume import ResumePoint, find_resume_point
from worker.shutdown import request_stop
from worker.training_call import bound_train
from worker.training_job import (
    JobRun,
    _event,
    _load_data,
    _load_model,
    _plan,
    _publish,
    _reporter,
    _run_claimed,
    _spec,
    _stopped,
)

logger = logging.getLogger(__name__)
Prepared = tuple[LoadedModel, JobPlan, list[TokenizedExample], list[TokenizedExample] | None]


class PeerFailed(RuntimeError):
    """Another rank failed before training; this one stops too."""


def main(argv: list[str]) -> int:
    job_id, worker_id, strategy = argv
    settings = get_settings()
    configure_logging(settings.log_format, "INFO")
    apply_torch_threads(settings.torch_threads)
    signal.signal(signal.SIGTERM, lambda *_: request_stop())
    world = join_world(strategy, resolve_device(settings.device).name)
    if world is None:
        print("worker.rank_entry runs as one of several ranks under torchrun", file=sys.stderr)
        return 2
    try:
        run_rank(job_id, worker_id, settings, world)
    finally:
        leave_world(world)
    return 0


def run_rank(job_id: str, worker_id: str, settings: Settings, world: World) -> None:
    """Train this rank's part of the job; rank 0 also settles the job as a single-process job would."""
    sessions = get_sessionmaker(settings.database_url)
    with sessions() as session:
        job = get_job(session, job_id)
    if job is None:
        raise LookupError(f"job {job_id} does not exist")
    lease = JobLease(sessions, job_id, worker_id, settings.heartbeat_interval_s)  # its fence; never renewed
    run = JobRun(job, settings, sessions, worker_id, lease, device=Device(world.device, world.device))
    if world.is_main:
        _run_claimed(run, partial(train_rank, world=world))
        return
    try:
        train_rank(run, world)
    except PeerFailed:
        logger.info("job %s: rank %d stops: another rank failed before training", job_id, world.rank)


def train_rank(run: JobRun, world: World) -> str | None:
    """Load, train and (rank 0) publish: ``_train_and_publish`` of one rank."""
    spec = resolve_spec_precision(_spec(run), run.device)  # the parent recorded it; every rank resolves alike
    loaded, plan, train_set, valid_set = _prepare_together(run, spec, world)
    reporter = _reporter(run) if world.is_main else None
    if from_main(reporter.poll() if reporter else None):
        return _stopped(run, reporter, None) if reporter else None
    result = _train(run, world, loaded, plan, train_set, valid_set, reporter)
    if reporter is None:
        return None
    if run.lease.lost:
        reporter.stop_reason = "lost"
    finished = result.adapter_dir is not None and reporter.stop_reason in (None, "shutdown")
    return _publish(run, loaded, result, reporter) if finished else _stopped(run, reporter, result)


def _prepare_together(run: JobRun, spec: ResolvedJobSpec, world: World) -> Prepared:
    """Model, plan and data on every rank, or an error on every rank (rank 0's own, which settles the job).

    Every rank fits the learning rate to the model alike; rank 0 alone records it.
    """
    error: Exception | None = None
    try:
        loaded = _load_model(run, spec, report=world.is_main)
        hidden = loaded.model.config.hidden_size
        fitted = (
            fit_to_model(run.sessions, run.job.id, spec, hidden) if world.is_main else spec.for_model(hidden)
        )
        fitted, train_set, valid_set = _load_data(run, loaded, fitted, report=world.is_main)
        plan = _plan(run, fitted)
        plan = replace(plan, training=replace(plan.training, strategy=world.strategy, device=world.device))
    except Exception as caught:
        error = caught
    if any_rank(error is not None, world.device):
        raise error if error is not None and world.is_main else PeerFailed("a rank failed while loading")
    return loaded, plan, train_set, valid_set


def _train(
    run: JobRun,
    world: World,
    loaded: LoadedModel,
    plan: JobPlan,
    train_set: list[TokenizedExample],
    valid_set: list[TokenizedExample] | None,
    reporter: JobReporter | None,
) -> TrainingResult:
    """Train from rank 0's resume point; only rank 0 reports, fences and writes events."""
    callbacks, fence = ([reporter], run.lease.fence) if reporter else ([], unfenced)
    go = bound_train(run, loaded, plan, train_set, valid_set, callbacks=callbacks, fence=fence)
    point: ResumePoint = from_main(_resume_point(run) if world.is_main else None)
    if point.path is None:
        if world.is_main and run.job.attempts > 1:
            _event(run, f"Starting over from step 1: {point.start_over_reason()}", "warn")
        return go(resume_from=None)
    if world.is_main:
        _event(run, f"Resuming from step {point.step} (checkpoint {point.name})")
    try:
        return go(resume_from=point.path)
    except ConfigError as error:  # every rank reads the same checkpoint, so all of them land here
        if error.code != "checkpoint_mismatch":
            raise
        if world.is_main:
            why = f"checkpoint step-{point.step} was made with other settings ({error.code})"
            _event(run, f"Starting over from step 1: {why}", "warn")
        return go(resume_from=None)


def _resume_point(run: JobRun) -> ResumePoint:
    with run.sessions() as session:
        return find_resume_point(session, run.job.id)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
