from __future__ import annotations

import itertools
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from registry.jobs import (
    TRANSITIONS,
    HeartbeatStatus,
    InvalidTransition,
    JobStatus,
    add_event,
    claim_job,
    create_job,
    get_job,
    heartbeat,
    list_events,
    list_jobs,
    request_cancel,
    stale_jobs,
    transition,
)
from registry.models import Job, JobEvent


def _job(session: Session, status: JobStatus = JobStatus.VALIDATING_FILES, **fields: object) -> Job:
    job = create_job(session, model="base-model", training_file="file-train", **fields)
    job.status = status
    session.commit()
    return job


def _running_job_id(sessions: sessionmaker[Session]) -> str:
    """A committed job that worker-a has claimed."""
    with sessions() as session:
        job_id = _job(session, JobStatus.QUEUED).id
        claim_job(session, job_id, "worker-a")
        session.commit()
    return job_id


def _messages(session: Session, job_id: str) -> list[str]:
    return [event.message for event in reversed(list_events(session, job_id, limit=100).data)]


def test_create_job_records_defaults_and_an_event(session: Session) -> None:
    job = create_job(
        session, model="base-model", training_file="file-a", metadata={"team": "x"}, suffix="demo"
    )
    session.commit()
    loaded = get_job(session, job.id)
    assert loaded is not None and loaded.id.startswith("ftjob-")
    assert (loaded.status, loaded.project_id, loaded.attempts) == ("validating_files", "default", 0)
    assert (loaded.metadata_, loaded.hyperparameters, loaded.result_files) == ({"team": "x"}, {}, [])
    assert loaded.cancel_requested is False
    assert _messages(session, job.id) == [f"Created fine-tuning job: {job.id}"]
    assert get_job(session, job.id, project_id="other") is None


def test_happy_path_sets_times_and_tells_the_story(session: Session) -> None:
    job = _job(session)
    for status in ("queued", "running"):
        transition(session, job, status)
    job.fine_tuned_model, job.trained_tokens = "ft:base-model::x", 512
    transition(session, job, "succeeded")
    session.commit()
    session.expire_all()
    assert (job.status, job.fine_tuned_model, job.trained_tokens) == ("succeeded", "ft:base-model::x", 512)
    assert job.started_at is not None and job.finished_at is not None and job.error is None
    assert _messages(session, job.id)[1:] == [
        "Files validated, job queued",
        "Fine-tuning job started",
        "The job has successfully completed",
    ]


def test_every_forbidden_transition_raises(session: Session) -> None:
    job = _job(session)
    for current, requested in itertools.product(JobStatus, JobStatus):
        job.status = current
        session.flush()
        if requested in TRANSITIONS[current]:
            continue
        with pytest.raises(InvalidTransition, match=f"is {current}; it cannot become {requested}"):
            transition(session, job, requested)
        assert job.status == current


def test_failure_stores_the_error_and_logs_it(session: Session) -> None:
    job = _job(session, JobStatus.RUNNING)
    error = {"code": "invalid_training_file", "message": "Example 3: no assistant message", "param": None}
    transition(session, job, "failed", error=error)
    session.commit()
    assert job.error == error and job.finished_at is not None
    last = list_events(session, job.id, limit=1).data[0]
    assert (last.level, last.message) == ("error", "The job failed: Example 3: no assistant message")


def test_transition_from_a_stale_copy_loses_the_race(sessions: sessionmaker[Session]) -> None:
    with sessions() as first, sessions() as second:
        job_id = _job(first, JobStatus.QUEUED).id
        stale = second.get_one(Job, job_id)
        assert claim_job(first, job_id, "worker-a") is not None
        first.commit()
        with pytest.raises(InvalidTransition, match="is running; it cannot become cancelled"):
            transition(second, stale, "cancelled")
        assert stale.status == "running"


def test_requeue_drops_the_worker_lease(session: Session) -> None:
    job = _job(session, JobStatus.QUEUED)
    claim_job(session, job.id, "worker-a")
    transition(session, job, "queued")
    assert (job.status, job.worker_id, job.heartbeat_at) == ("queued", None, None)


def test_exactly_one_of_racing_workers_claims_a_job(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        job_id = _job(session, JobStatus.QUEUED).id
    barrier = threading.Barrier(4)
    winners: list[str] = []
    errors: list[BaseException] = []

    def race(worker_id: str) -> None:
        try:
            with sessions() as session:
                barrier.wait()
                if claim_job(session, job_id, worker_id) is not None:
                    winners.append(worker_id)
                session.commit()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=race, args=(f"worker-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(winners) == 1
    with sessions() as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.worker_id, job.attempts) == ("running", winners[0], 1)


def test_a_stale_running_job_can_be_reclaimed(session: Session) -> None:
    job = _job(session, JobStatus.QUEUED)
    assert claim_job(session, job.id, "worker-a", now=1000) is not None
    assert claim_job(session, job.id, "worker-b", stale_after_s=60, now=1030) is None
    assert [j.id for j in stale_jobs(session, stale_after_s=60, now=1061)] == [job.id]
    reclaimed = claim_job(session, job.id, "worker-b", stale_after_s=60, now=1061)
    assert reclaimed is not None
    assert (reclaimed.worker_id, reclaimed.attempts, reclaimed.heartbeat_at) == ("worker-b", 2, 1061)
    assert reclaimed.started_at == 1000
    assert _messages(session, job.id)[-1] == "Fine-tuning job started (attempt 2)"
    assert heartbeat(session, job.id, "worker-a") == HeartbeatStatus.LOST
    assert heartbeat(session, job.id, "worker-b", now=1070) == HeartbeatStatus.OK
    assert session.get_one(Job, job.id, populate_existing=True).heartbeat_at == 1070


def test_claim_refuses_finished_and_cancelling_jobs(session: Session) -> None:
    done = _job(session, JobStatus.SUCCEEDED)
    cancelling = _job(session, JobStatus.QUEUED, project_id="p")
    cancelling.cancel_requested = True
    session.commit()
    assert claim_job(session, done.id, "worker-a") is None
    assert claim_job(session, cancelling.id, "worker-a") is None
    assert claim_job(session, "ftjob-missing", "worker-a") is None


def test_cancel_before_running_is_immediate(session: Session) -> None:
    job = _job(session, JobStatus.QUEUED)
    request_cancel(session, job)
    session.commit()
    assert (job.status, job.cancel_requested) == ("cancelled", True)
    assert job.finished_at is not None
    with pytest.raises(InvalidTransition):
        request_cancel(session, job)


def test_cancel_while_running_reaches_the_worker(session: Session) -> None:
    job = _job(session, JobStatus.QUEUED)
    claim_job(session, job.id, "worker-a")
    request_cancel(session, job)
    assert job.status == "running"
    assert heartbeat(session, job.id, "worker-a") == HeartbeatStatus.CANCEL_REQUESTED
    transition(session, job, "cancelled")
    assert _messages(session, job.id)[-2:] == ["Cancellation requested", "The job was cancelled"]


def test_a_cancel_that_comes_after_success_is_refused_even_with_a_stale_row(
    sessions: sessionmaker[Session],
) -> None:
    job_id = _running_job_id(sessions)
    with sessions() as api:
        seen = get_job(api, job_id)  # the API loaded the job while it was still running
        with sessions.begin() as worker:
            transition(worker, get_job(worker, job_id), JobStatus.SUCCEEDED)
        with pytest.raises(InvalidTransition):
            request_cancel(api, seen)
        api.commit()
    with sessions() as session:
        assert (get_job(session, job_id).status, get_job(session, job_id).cancel_requested) == (
            "succeeded",
            False,
        )


def test_a_cancel_racing_a_worker_that_finishes_either_lands_first_or_is_refused(
    sessions: sessionmaker[Session],
) -> None:
    """The worker's finishing transaction starts with its heartbeat, which holds the row until it commits."""
    job_id = _running_job_id(sessions)
    outcome: list[str] = []

    def cancel() -> None:
        with sessions() as api:
            try:
                request_cancel(api, get_job(api, job_id))
                api.commit()
                outcome.append("requested")
            except InvalidTransition:
                outcome.append("refused")

    with sessions.begin() as worker:
        assert heartbeat(worker, job_id, "worker-a") == HeartbeatStatus.OK
        racer = threading.Thread(target=cancel)
        racer.start()
        racer.join(timeout=0.5)  # the cancel waits for the row this transaction holds
        assert outcome == []
        transition(worker, get_job(worker, job_id), JobStatus.SUCCEEDED)
    racer.join()
    assert outcome == ["refused"]
    with sessions() as session:
        assert get_job(session, job_id).cancel_requested is False


def test_jobs_page_newest_first(session: Session) -> None:
    ids = [_job(session).id for _ in range(5)]
    _job(session, project_id="other")
    first = list_jobs(session, project_id="default", limit=2)
    assert [job.id for job in first.data] == [ids[4], ids[3]] and first.has_more
    second = list_jobs(session, project_id="default", after=first.data[-1].id, limit=2)
    assert [job.id for job in second.data] == [ids[2], ids[1]] and second.has_more
    last = list_jobs(session, project_id="default", after=second.data[-1].id, limit=2)
    assert [job.id for job in last.data] == [ids[0]] and not last.has_more
    assert len(list_jobs(session, limit=100).data) == 6
    with pytest.raises(ValueError, match="limit must be at least 1"):
        list_jobs(session, limit=0)


def test_events_page_newest_first_and_keep_metrics(session: Session) -> None:
    job = _job(session)
    for step in range(1, 4):
        add_event(session, job.id, "info", f"Step {step}/3", type="metrics", data={"step": step})
    page = list_events(session, job.id, limit=2)
    assert [event.data for event in page.data] == [{"step": 3}, {"step": 2}] and page.has_more
    rest = list_events(session, job.id, after=page.data[-1].id, limit=10)
    assert [event.message for event in rest.data] == ["Step 1/3", f"Created fine-tuning job: {job.id}"]
    assert not rest.has_more and rest.data[0].type == "metrics"


@pytest.mark.parametrize(("level", "kind"), [("debug", "message"), ("info", "log")])
def test_add_event_rejects_unknown_level_or_type(session: Session, level: str, kind: str) -> None:
    job = _job(session)
    with pytest.raises(ValueError, match="must be one of"):
        add_event(session, job.id, level, "hello", type=kind)


def test_deleting_a_job_deletes_its_events(session: Session) -> None:
    job = _job(session)
    session.delete(job)
    session.commit()
    assert session.scalars(select(JobEvent).where(JobEvent.job_id == job.id)).all() == []
