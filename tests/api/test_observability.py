"""Request ids, structured logs and Prometheus metrics of the API."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from api.metrics import ServiceMetrics
from registry.api_keys import create_api_key
from registry.db import session_scope
from registry.jobs import JobStatus, add_event, transition
from registry.logging_setup import JsonFormatter, configure_logging, log_context, make_formatter
from registry.models import Job
from registry.settings import Settings
from tests.api.conftest import assert_error, create_job, make_settings

REQUEST_ID = re.compile(r"req-[0-9a-f]{32}")


@pytest.fixture
def log_stream(client: TestClient) -> Iterator[io.StringIO]:
    """The app's log output from here on, captured as JSON lines (the app configured logging at start)."""
    stream = io.StringIO()
    handler = configure_logging("json", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def metric_value(text: str, name: str, labels: str = "") -> float:
    """The value of the sample ``name{labels}`` in an exposition (labels exactly as rendered)."""
    sample = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {sample} in:\n{text}")


def test_a_caller_request_id_is_echoed_and_logged(client: TestClient, log_stream: io.StringIO) -> None:
    response = client.get("/v1/fine_tuning/jobs/ftjob-missing", headers={"X-Request-ID": "trace-42.a:b"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "trace-42.a:b"
    access = [line for line in log_lines(log_stream) if line["logger"] == "api.access"]
    assert len(access) == 1
    line = access[0]
    assert set(line) >= {"ts", "level", "logger", "message", "request_id", "job_id", "duration_ms"}
    assert (line["request_id"], line["job_id"], line["level"]) == ("trace-42.a:b", "ftjob-missing", "INFO")
    assert (line["method"], line["path"], line["status"]) == ("GET", "/v1/fine_tuning/jobs/{job_id}", 404)
    assert line["duration_ms"] >= 0


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 129, "naïve"])
def test_a_missing_or_odd_request_id_is_replaced_by_a_new_one(client: TestClient, given: str | None) -> None:
    headers = {} if given is None else {"X-Request-ID": given.encode()}
    first = client.get("/healthz", headers=headers).headers["X-Request-ID"]
    second = client.get("/healthz", headers=headers).headers["X-Request-ID"]
    assert REQUEST_ID.fullmatch(first) and REQUEST_ID.fullmatch(second) and first != second


def test_errors_carry_the_request_id_too(client: TestClient) -> None:
    response = client.post("/v1/files", content=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert REQUEST_ID.fullmatch(response.headers["X-Request-ID"])


def test_unhandled_errors_are_logged_with_the_request_id_and_answered_with_it(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        stream = io.StringIO()
        handler = configure_logging("json", stream=stream)
        try:
            response = client.get("/boom", headers={"X-Request-ID": "boom-1"})
        finally:
            logging.getLogger().removeHandler(handler)
    assert (response.status_code, response.headers["X-Request-ID"]) == (500, "boom-1")
    assert response.json()["error"]["code"] == "internal_error"
    lines = log_lines(stream)
    failure = next(line for line in lines if line["level"] == "ERROR")
    assert failure["request_id"] == "boom-1" and "RuntimeError: secret detail" in failure["exc_info"]
    access = next(line for line in lines if line["logger"] == "api.access")
    assert (access["path"], access["status"], access["request_id"]) == ("/boom", 500, "boom-1")


def test_log_records_carry_the_bound_ids() -> None:
    record = logging.makeLogRecord({"name": "worker", "levelname": "WARNING", "msg": "step %d", "args": (3,)})
    stream = io.StringIO()
    handler = configure_logging("json", stream=stream)
    try:
        with log_context(request_id="req-1"), log_context(job_id="ftjob-7"):
            handler.handle(record)
        handler.handle(logging.makeLogRecord({"msg": "outside"}))
    finally:
        logging.getLogger().removeHandler(handler)
    inside, outside = log_lines(stream)
    assert inside["message"] == "step 3" and inside["logger"] == "worker" and inside["level"] == "WARNING"
    assert (inside["request_id"], inside["job_id"]) == ("req-1", "ftjob-7")
    assert (outside["request_id"], outside["job_id"]) == (None, None)


def test_exceptions_are_kept_in_one_json_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, "f", 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: bad" in json.loads(line)["exc_info"]


def test_text_format_and_unknown_formats() -> None:
    record = logging.makeLogRecord({"msg": "hello", "request_id": "req-9", "job_id": None})
    assert "request_id=req-9" in make_formatter("text").format(record)
    with pytest.raises(ValueError, match="log_format"):
        make_formatter("xml")  # type: ignore[arg-type]


def test_metrics_expose_the_service_metric_names(client: TestClient) -> None:
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "diablo_http_request_duration_seconds_bucket",
        "diablo_jobs",
        "diablo_queue_depth",
        "diablo_registry_up",
        "# TYPE diablo_inference_latency_seconds histogram",
        "# TYPE diablo_job_duration_seconds summary",
        "# TYPE diablo_training_tokens_per_second gauge",
    ):
        assert name in text
    labels = 'method="GET",route="/healthz",status="200"'
    assert metric_value(text, "diablo_http_request_duration_seconds_count", labels) == 1
    assert metric_value(text, "diablo_registry_up") == 1


def test_jobs_by_status_and_queue_depth_follow_the_registry(client: TestClient) -> None:
    before = client.get("/metrics").text
    assert metric_value(before, "diablo_jobs", 'status="queued"') == 0
    assert create_job(client).status_code == 200
    after = client.get("/metrics").text
    assert metric_value(after, "diablo_jobs", 'status="queued"') == 1
    assert metric_value(after, "diablo_jobs", 'status="running"') == 0
    assert metric_value(after, "diablo_queue_depth", 'source="registry"') == 1


def finish_job(db: Session, job_id: str, started: int, finished: int) -> None:
    job = db.get_one(Job, job_id)
    transition(db, job, JobStatus.RUNNING)
    job.started_at, job.finished_at = started, finished
    db.flush()


def test_job_durations_and_training_speed_come_from_the_registry(client: TestClient, db: Session) -> None:
    first, second, running = (create_job(client).json()["id"] for _ in range(3))
    for job_id, seconds in ((first, 10), (second, 30)):
        finish_job(db, job_id, 1000, 1000 + seconds)
        db.get_one(Job, job_id).status = JobStatus.SUCCEEDED
    transition(db, db.get_one(Job, running), JobStatus.RUNNING)
    add_event(db, running, "info", "Step 1", type="metrics", data={"step": 1, "tokens_per_second": 123.5})
    add_event(db, running, "info", "validation", type="metrics", data={"step": 1, "valid_loss": 1.0})
    db.commit()
    text = client.get("/metrics").text
    assert metric_value(text, "diablo_job_duration_seconds_count", 'status="succeeded"') == 2
    assert metric_value(text, "diablo_job_duration_seconds_sum", 'status="succeeded"') == 40
    assert metric_value(text, "diablo_training_tokens_per_second") == 123.5
    assert not [job_id for job_id in (first, second, running) if job_id in text]  # no tenant's job ids


def test_inference_routes_count_as_inference_latency(settings: Settings) -> None:
    metrics = ServiceMetrics(settings)
    metrics.observe_request("/v1/chat/completions", "POST", 200, 0.3)
    metrics.observe_request("/v1/files", "POST", 200, 0.1)
    text = metrics.exposition().decode()
    labels = 'route="/v1/chat/completions",status="200"'
    assert metric_value(text, "diablo_inference_latency_seconds_count", labels) == 1
    assert 'route="/v1/files"' not in "".join(
        line for line in text.splitlines() if line.startswith("diablo_inference")
    )


@pytest.mark.parametrize(
    ("auth", "metrics_auth", "needs_key"),
    [("on", "auto", True), ("off", "auto", False), ("on", "off", False), ("off", "on", True)],
)
def test_metrics_need_an_api_key_when_the_operator_says_so(
    tmp_path, sqlite_url: str, auth: str, metrics_auth: str, needs_key: bool
) -> None:
    settings = make_settings(tmp_path / "data", sqlite_url, auth=auth, metrics_auth=metrics_auth)
    with TestClient(create_app(settings)) as client:
        with session_scope(sqlite_url) as session:
            key = create_api_key(session, "alpha")[1]
        anonymous = client.get("/metrics")
        if needs_key:
            assert_error(anonymous, 401, "missing_api_key")
            bad = client.get("/metrics", headers={"Authorization": "Bearer sk-diablo-wrong-key-000000"})
            assert_error(bad, 401, "invalid_api_key")
        else:
            assert anonymous.status_code == 200
        keyed = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert keyed.status_code == 200 and "diablo_jobs" in keyed.text


def test_readyz_answers_a_reason_code_and_logs_the_exception(
    tmp_path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path / "data", sqlite_url, broker_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client, caplog.at_level(logging.WARNING, logger="api.health"):
        response = client.get("/readyz")
    error = assert_error(response, 503, "not_ready", "broker")
    assert (response.json()["broker"], error["message"]) == ("unavailable", "Not ready: broker unavailable")
    assert "127.0.0.1" not in response.text and "Error" not in response.text
    logged = "\n".join(
        record.getMessage() + str(record.exc_info and record.exc_info[1]) for record in caplog.records
    )
    assert "broker unavailable" in logged and "127.0.0.1" in logged  # the detail went to the log
