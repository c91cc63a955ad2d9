"""Prometheus metrics of one API app: request and inference latency measured here, job figures read from
the registry when ``/metrics`` is scraped.

Workers are separate processes, so what they do (job durations, training speed) is read from the registry,
which they keep up to date, instead of being counted in memory here: one GROUP BY for the jobs by status and
their durations, and the latest metrics event of each running job for its tokens per second.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from registry.db import get_sessionmaker
from registry.jobs import JobStatus
from registry.models import Job, JobEvent
from registry.settings import Settings

logger = logging.getLogger(__name__)
# Seconds; inference runs longer than a control-plane request, so its buckets reach further.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INFERENCE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
INFERENCE_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})
# The newest events of a running job searched for a training step (validation events carry no speed).
RECENT_METRICS_EVENTS = 5
REDIS_TIMEOUT_S = 1.0


class RegistryCollector(Collector):
    """Job counts, durations, queue depth and training speed, read from the registry at each scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("diablo_registry_up", "1 if the registry answered this scrape, else 0")
        try:
            families = self._registry_families()
        except SQLAlchemyError:
            logger.warning("metrics: the registry did not answer", exc_info=True)
            families = []
        up.add_metric([], 1.0 if families else 0.0)
        yield up
        yield from families

    def _registry_families(self) -> list[Metric]:
        duration = Job.finished_at - Job.started_at
        by_status = select(Job.status, func.count(), func.count(duration), func.sum(duration))
        with get_sessionmaker(self.settings.database_url)() as session:
            rows = session.execute(by_status.group_by(Job.status)).all()
            speeds = _training_speeds(session)
        counts = {str(status): int(count) for status, count, _, _ in rows}
        jobs = GaugeMetricFamily("diablo_jobs", "Fine-tuning jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        durations = SummaryMetricFamily(
            "diablo_job_duration_seconds", "Start-to-finish time of finished jobs", labels=["status"]
        )
        for status, _, timed, total in rows:
            if timed:
                durations.add_metric([str(status)], count_value=int(timed), sum_value=float(total or 0))
        queue_depth = self._queue_depth(counts.get(JobStatus.QUEUED.value, 0))
        return [jobs, queue_depth, durations, _speeds_family(speeds)]

    def _queue_depth(self, queued: int) -> Metric:
        depth = GaugeMetricFamily(
            "diablo_queue_depth",
            "Jobs waiting for a worker: queued jobs in the registry, messages in the broker's queue",
            labels=["source"],
        )
        depth.add_metric(["registry"], queued)
        waiting = broker_queue_length(self.settings)
        if waiting is not None:
            depth.add_metric(["broker"], waiting)
        return depth


def _training_speeds(session: Session) -> dict[str, float]:
    """Tokens per second of each running job, from its newest training-step metrics event."""
    running = session.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING).order_by(Job.id)).all()
    speeds: dict[str, float] = {}
    for job_id in running:
        recent = session.scalars(
            select(JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
            .order_by(JobEvent.id.desc())
            .limit(RECENT_METRICS_EVENTS)
        ).all()
        speed = next((data["tokens_per_second"] for data in recent if _has_speed(data)), None)
        if isinstance(speed, int | float):
            speeds[job_id] = float(speed)
    return speeds


def _speeds_family(speeds: dict[str, float]) -> Metric:
    # Summed, not labelled by job: job ids belong to tenants, and a label per job grows without bound.
    tokens = GaugeMetricFamily(
        "diablo_training_tokens_per_second", "Summed training speed of the running jobs that report one"
    )
    tokens.add_metric([], sum(speeds.values()))
    return tokens


def _has_speed(data: Any) -> bool:
    return isinstance(data, dict) and "tokens_per_second" in data


def broker_queue_length(settings: Settings) -> int | None:
    """Messages waiting in the job queue of a Redis broker; None for other brokers or when Redis is down."""
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return None
    client = redis.Redis.from_url(
        settings.broker_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    try:
        return int(client.llen(settings.queue_name))
    except redis.RedisError:
        return None
    finally:
        client.close()


class ServiceMetrics:
    """The metrics of one app, in a registry of their own (so several apps in one process never clash)."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.http_duration = Histogram(
            "diablo_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.inference_latency = Histogram(
            "diablo_inference_latency_seconds",
            "Time to answer an inference request, streamed answers to their last byte",
            ["route", "status"],
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self.registry.register(RegistryCollector(settings))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one answered request (inference routes count in both histograms)."""
        self.http_duration.labels(route, method, str(status)).observe(seconds)
        if route in INFERENCE_ROUTES:
            self.inference_latency.labels(route, str(status)).observe(seconds)

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text exposition format."""
        return generate_latest(self.registry)
