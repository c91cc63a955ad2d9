"""One fine-tuning job from claim to final status: ``run_training_job``.

The job is claimed atomically, so two workers never train it at once, and its lease is renewed for the
whole claim (``worker.lease``); training reports through ``worker.progress.JobReporter``. Anything another
worker could see (a checkpoint, pruning, the published adapter) is placed only while this worker holds the
lease, and the adapter is registered with its sha256 in the transaction that checks it. Every
way out of a claimed job ends in a final status (succeeded, cancelled, failed) written by this worker, or,
for a database or process failure, hands the job back to ``queued`` and re-raises so that Celery re-delivers
it: a job is never left ``running`` by a worker that stopped working on it. A worker that is shutting down
stops at the next step, checkpoints it and hands the job back to ``queued`` (``worker.shutdown``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.data.datasets import DatasetLimits
from diablo_core.data.tokenization import TokenizedExample
from diablo_core.devices import Device, DeviceUnavailable, release_device_memory, resolve_device
from diablo_core.errors import ConfigError
from diablo_core.evaluation.examples import EvalExample
from diablo_core.methods.adapters import read_any_adapter_config
from diablo_core.methods.diablo.model import trainable_parameters
from diablo_core.models.catalog import canonical_model_id
from diablo_core.models.loading import LoadedModel
from diablo_core.spec import ResolvedJobSpec
from diablo_core.training.dpo import DPO
from diablo_core.training.loop import TrainingResult
from registry.artifacts import fine_tuned_model_name, register_adapter
from registry.db import get_sessionmaker
from registry.errors import error_object
from registry.job_metrics import TRAINABLE_PARAMETERS
from registry.jobs import (
    HeartbeatStatus,
    InvalidTransition,
    JobStatus,
    add_event,
    claim_job,
    get_job,
    transition,
)
from registry.lease import check_lease, hand_back
from registry.models import Job
from registry.pausing import note_pause
from registry.result_files import add_results_file
from registry.settings import Settings
from worker import artifact_store, distributed_job
from worker.auto_fit import best_data, best_message, fit_max_length, fit_to_model, hold_out
from worker.integrations import job_integrations
from worker.job_config import JobPlan, data_format, plan_job, read_spec
from worker.job_evaluation import load_answers
from worker.job_inputs import JobDataError, load_examples, locate_files, longest_example
from worker.job_model import (
    load_job_model,
    model_source,
    parent_adapter,
    precision_note,
    resolve_spec_precision,
    store_precision,
)
from worker.lease import JobLease
from worker.progress import JobReporter
from worker.resume import find_resume_point
from worker.shutdown import hand_back_for_shutdown, stop_requested
from worker.training_call import bound_train

logger = logging.getLogger(__name__)
# Infrastructure failures worth a retry: the job is handed back and the task re-delivered.
METHOD_PARAM = "method.diablo.hyperparameters"
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError)


@dataclass
class JobRun:
    """What one attempt at a job works with."""

    job: Job
    settings: Settings
    sessions: sessionmaker[Session]
    worker_id: str
    lease: JobLease
    device: Device | None = None
    tokens_per_byte: float | None = None  # of the training file, for estimates (``registry.throughput``)

    @property
    def fine_tuned_model(self) -> str:
        return self.job.fine_tuned_model or fine_tuned_model_name(
            canonical_model_id(self.job.model), self.job.id, self.job.suffix
        )


def run_training_job(job_id: str, settings: Settings, worker_id: str) -> str | None:
    """Claim and run a fine-tuning job; a job that is not free (finished, cancelled, held) is left alone.

    Args:
        job_id: The job to run.
        settings: Service settings (database, data folders, device, heartbeat and checkpoint spacing).
        worker_id: Identifies this worker in the job's lease.

    Returns:
        The job's final status, or None if it was not claimed or was taken away while it ran.

    Raises:
        sqlalchemy.exc.OperationalError: If the database failed; the job was handed back to ``queued``
            when possible, and the caller should retry later.
    """
    if stop_requested():
        # The message is acknowledged unclaimed; the job stays queued and the sweeper sends it again.
        logger.warning("job %s: this worker is shutting down; not claiming it", job_id)
        return None
    sessions = get_sessionmaker(settings.database_url)
    with sessions.begin() as session:
        job = claim_job(session, job_id, worker_id, stale_after_s=settings.heartbeat_timeout_s)
    if job is None:
        logger.info("job %s is not free to run (finished, cancelled or held by a live worker)", job_id)
        return None
    logger.info("job %s claimed by %s (attempt %d)", job_id, worker_id, job.attempts)
    with JobLease(sessions, job_id, worker_id, settings.heartbeat_interval_s) as lease:
        return _run_claimed(JobRun(job, settings, sessions, worker_id, lease))


def _run_claimed(run: JobRun, work: Callable[[JobRun], str | None] | None = None) -> str | None:
    """Run ``work`` (training and publishing) and settle the job whatever happens; rank 0 passes its own."""
    settled = False
    try:
        status = (work or _train_and_publish)(run)
        settled = True
    except JobDataError as error:
        status, settled = _finish(run, JobStatus.FAILED, error.as_error()), True
    except TRANSIENT_ERRORS:
        logger.exception("job %s: database failure; handing the job back", run.job.id)
        raise
    except Exception as error:
        logger.exception("job %s failed with an internal error", run.job.id)
        status, settled = _finish(run, JobStatus.FAILED, _internal_error(error)), True
    finally:
        if not settled:
            _hand_back(run)
        release_device_memory(run.device)
    return status


def _internal_error(error: Exception) -> dict[str, Any]:
    if isinstance(error, DeviceUnavailable):
        return error_object("internal_error", str(error))
    message = f"An internal error ({type(error).__name__}) stopped training; the worker logs have details."
    return error_object("internal_error", message)


def _train_and_publish(run: JobRun) -> str | None:
    run.device = resolve_device(run.settings.device)
    _event(run, f"Using device {run.device.description}")
    requested = _spec(run)
    spec = resolve_spec_precision(requested, run.device)
    store_precision(run.sessions, run.job, run.worker_id, spec.precision)
    _event(run, precision_note(requested.precision, spec.precision, run.device))
    if (ranks := distributed_job.job_ranks(run.settings, run.device, spec.strategy)) > 1:
        if run.job.evaluation_file is None:
            return distributed_job.run_ranks(run, spec.strategy, ranks)  # rank 0 trains, publishes, settles
        _event(run, f"Training in one process, not {ranks}: jobs with an evaluation_file run alone", "warn")
    loaded = _load_model(run, spec)
    fitted = fit_to_model(run.sessions, run.job.id, spec, loaded.model.config.hidden_size)
    fitted, train_set, valid_set = _load_data(run, loaded, fitted)
    plan = _plan(run, fitted)
    answers = load_answers(run.sessions, run.job, run.settings, plan.training.eval_every)
    reporter = _reporter(run)
    if reporter.poll():
        return _stopped(run, reporter, None)
    warn = partial(_event, run, level="warn")
    with job_integrations(run.job, run.settings.data_dir, warn) as integrations:
        result = _train(run, loaded, plan, train_set, valid_set, reporter, integrations, answers)
    if run.lease.lost:  # the fence refused a write: the job is another worker's now
        reporter.stop_reason = "lost"
    # A shutdown or pause asked for at the last step comes too late to stop training: the job is published.
    finished = result.adapter_dir is not None and reporter.stop_reason in (None, "shutdown", "paused")
    return _publish(run, loaded, result, reporter) if finished else _stopped(run, reporter, result)


def _spec(run: JobRun) -> ResolvedJobSpec:
    try:
        spec = read_spec(run.job.method)
        spec.adapter_config()  # refused values fail the job before the model is loaded
    except ValueError as error:
        raise JobDataError("invalid_hyperparameters", "hyperparameters", str(error)) from error
    return spec


def _plan(run: JobRun, spec: ResolvedJobSpec) -> JobPlan:
    try:
        return plan_job(spec, seed=run.job.seed, device=run.device.name)
    except ValueError as error:
        raise JobDataError("invalid_hyperparameters", "hyperparameters", str(error)) from error


def _load_model(run: JobRun, spec: ResolvedJobSpec, report: bool = True) -> LoadedModel:
    """Load the base model (quantized if asked) and apply the job's method, from the parent's blocks.

    With ``report``, an event records how many parameters train (the dashboard's compare view shows it).
    """
    assert run.device is not None
    source, parent = (
        model_source(run.job.model, run.settings),
        parent_adapter(run.sessions, run.job, run.settings),
    )
    loaded = load_job_model(source, spec, run.device, run.settings.data_dir, parent)
    if run.job.parent_model is not None:
        _event(run, f"Starting from the blocks of {run.job.parent_model}")
    if report:
        count = trainable_parameters(loaded.model)
        data = {TRAINABLE_PARAMETERS: count}
        _event(run, f"Training {count:,} adapter parameters ({spec.stored_type})", data=data)
    return loaded


def _load_data(
    run: JobRun, loaded: LoadedModel, spec: ResolvedJobSpec, report: bool = True
) -> tuple[ResolvedJobSpec, list[TokenizedExample], list[TokenizedExample] | None]:
    """The job's examples, checked against ``max_length`` (an "auto" one resolved: the spec returned)."""
    with run.sessions() as session:
        files = locate_files(session, run.job.training_file, run.job.validation_file, run.settings.files_dir)
    limit, settings = run.settings.max_tokens_per_file, run.settings
    shape = DatasetLimits(settings.max_json_depth, settings.max_turns_per_example)  # as checked at upload
    load = partial(load_examples, max_tokens=limit, limits=shape, expected_format=data_format(spec))
    context = getattr(loaded.model.config, "max_position_embeddings", None)
    max_length = spec.length_limit(context)
    train_set = load(files.training, loaded.tokenizer, max_length, "training_file")
    tokens = sum(len(e.input_ids) for e in train_set if isinstance(e, TokenizedExample))
    run.tokens_per_byte = tokens / max(files.training.stat().st_size, 1)
    valid_set = None
    if files.validation is not None:
        valid_set = load(files.validation, loaded.tokenizer, max_length, "validation_file")
    sessions = run.sessions if report else None  # one event per job, not one per rank
    spec = fit_max_length(sessions, run.job.id, spec, longest_example(train_set, valid_set), context)
    if files.validation is None and spec.validation_holdout:
        seed = int(run.job.seed or 0)  # the training config's seed (``plan_job``)
        return spec, *hold_out(sessions, run.job.id, train_set, spec.validation_holdout, seed)
    return spec, train_set, valid_set


def _reporter(run: JobRun) -> JobReporter:
    return JobReporter(
        run.sessions,
        run.job.id,
        run.worker_id,
        fine_tuned_model=run.fine_tuned_model,
        heartbeat_interval_s=run.settings.heartbeat_interval_s,
    )


def _train(
    run: JobRun,
    loaded: LoadedModel,
    plan: JobPlan,
    train_set: list[TokenizedExample],
    valid_set: list[TokenizedExample] | None,
    reporter: JobReporter,
    integrations: list[Any] | None = None,
    answers: list[EvalExample] | None = None,
) -> TrainingResult:
    """Train, resuming from the job's newest verified checkpoint; a re-delivered job's events say which."""
    callbacks = [reporter, *(integrations or [])]
    options: dict[str, Any] = {} if plan.beta is None else {"objective": DPO(plan.beta)}
    if answers:
        options["eval_answers"] = answers
    go = bound_train(
        run, loaded, plan, train_set, valid_set, callbacks=callbacks, fence=run.lease.fence, **options
    )
    with run.sessions() as session:
        point = find_resume_point(session, run.job.id)
    if point.path is None:
        if run.job.attempts > 1:
            _event(run, f"Starting over from step 1: {point.start_over_reason()}", "warn")
        return go(resume_from=None)
    _event(run, f"Resuming from step {point.step} (checkpoint {point.name})")
    try:
        return go(resume_from=point.path)
    except ConfigError as error:
        if error.code != "checkpoint_mismatch":
            raise
        why = f"checkpoint step-{point.step} was made with other settings ({error.code})"
        _event(run, f"Starting over from step 1: {why}", "warn")
        return go(resume_from=None)


def _publish(run: JobRun, loaded: LoadedModel, result: TrainingResult, reporter: JobReporter) -> str | None:
    """Stage the adapter, then place and register it in the transaction that marks the job succeeded."""
    name = run.fine_tuned_model
    staged = artifact_store.stage_adapter(
        result.best_adapter_dir or result.adapter_dir, run.settings.adapters_dir, name, run.job.attempts
    )
    config = read_any_adapter_config(staged.staging)

    def record(session: Session, job: Job) -> None:
        path = artifact_store.place_adapter(staged)  # under the lease: nobody else can hold the job now
        register_adapter(
            session,
            name=name,
            job_id=job.id,
            project_id=job.project_id,
            base_model=canonical_model_id(job.model),
            storage_path=str(path),
            sha256=staged.sha256,
            size_bytes=staged.size_bytes,
            base_model_fingerprint=loaded.identity.content_hash,
            config=config,
            parent_model=job.parent_model,
        )
        results = add_results_file(session, run.settings, job.project_id, result.history)
        job.fine_tuned_model, job.trained_tokens, job.result_files = name, result.trained_tokens, [results.id]
        job.estimated_finish = None
        if result.best_adapter_dir is not None:
            add_event(session, job.id, "info", best_message(result), data=best_data(result))
        add_event(session, job.id, "info", f"New fine-tuned model created: {name}")
        reporter.record_throughput(
            session, canonical_model_id(job.model), result.precision, run.tokens_per_byte
        )

    try:
        status = _finish(run, JobStatus.SUCCEEDED, before=record)
    finally:
        artifact_store.discard_staged(staged)
    if status == JobStatus.SUCCEEDED:
        for directory in (result.adapter_dir, result.best_adapter_dir):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
    return status


def _stopped(run: JobRun, reporter: JobReporter, result: TrainingResult | None) -> str | None:
    if reporter.stop_reason == "lost":
        logger.warning("job %s is no longer running under %s; stopping quietly", run.job.id, run.worker_id)
        return None
    if reporter.stop_reason == "shutdown":
        step = result.steps if result is not None and result.stopped else None
        logger.info("job %s: worker shutting down; handing the job back at step %s", run.job.id, step)
        return hand_back_for_shutdown(run.sessions, run.job.id, run.worker_id, step, run.settings)
    if reporter.stop_reason == "paused":
        step = result.steps if result is not None and result.stopped else None
        return _finish(run, JobStatus.PAUSED, before=partial(note_pause, step))
    return _finish(run, JobStatus.CANCELLED)


def _finish(
    run: JobRun,
    status: JobStatus,
    error: dict[str, Any] | None = None,
    before: Callable[[Session, Job], None] | None = None,
) -> str | None:
    """Move the job to ``status`` if it still runs under this worker; return its status (None if lost).

    The transaction starts by renewing the lease, which holds the job's row until it commits: a cancel
    requested before that point wins over success (the job ends ``cancelled`` and ``before`` does not run),
    and one requested later finds the job finished (``registry.jobs.request_cancel`` raises).
    """
    with run.sessions.begin() as session:
        lease = check_lease(session, run.job.id, run.worker_id)
        if lease == HeartbeatStatus.LOST:
            logger.warning("job %s: not ours any more, not marking it %s", run.job.id, status)
            return None
        job = get_job(session, run.job.id)
        if status == JobStatus.SUCCEEDED and lease == HeartbeatStatus.CANCEL_REQUESTED:
            status, before = JobStatus.CANCELLED, None
            add_event(session, job.id, "info", "Cancelled before the fine-tuned model was published")
        elif status == JobStatus.PAUSED and lease == HeartbeatStatus.CANCEL_REQUESTED:
            status, before = JobStatus.CANCELLED, None  # a cancel wins over a pause
        if before is not None:
            before(session, job)
            session.flush()
        try:
            transition(session, job, status, error)
        except InvalidTransition:
            logger.warning("job %s changed status concurrently; leaving it %s", run.job.id, job.status)
        return job.status


def _hand_back(run: JobRun) -> None:
    """Return an unfinished job to ``queued`` so a re-delivery can claim it at once (best effort).

    A job whose cancellation was requested is cancelled instead.
    """
    message = "Training was interrupted; the job will be retried"
    try:
        with run.sessions.begin() as session:
            hand_back(session, run.job.id, run.worker_id, message, level="warn")
    except Exception:
        logger.exception("job %s: could not hand it back; it is claimable when its lease expires", run.job.id)


def _event(run: JobRun, message: str, level: str = "info", data: dict[str, Any] | None = None) -> None:
    with run.sessions.begin() as session:
        add_event(session, run.job.id, level, message, data=data)
