"""The worker's parts on their own: device choice, artifact paths and publishing, progress throttling."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.devices import DeviceUnavailable, resolve_device
from diablo_core.training.callbacks import TrainingProgress
from registry import lease as lease_module
from registry.jobs import HeartbeatStatus, claim_job, get_job, heartbeat, request_cancel
from registry.models import JobEvent
from registry.settings import Settings
from registry.storage import fsync_tree, safe_dir_name
from worker.artifact_store import discard_staged, place_adapter, stage_adapter
from worker.progress import JobReporter, metrics_interval

WORKER = "test-worker:1"


def test_auto_picks_cuda_only_when_present_and_cpu_is_always_there() -> None:
    assert resolve_device("cpu").name == "cpu" and resolve_device("CPU").description == "cpu"
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").name == expected
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("tpu")


def test_asking_for_cuda_gives_cuda_or_a_clear_error() -> None:
    if torch.cuda.is_available():
        device = resolve_device("cuda")
        assert device.is_cuda and device.description.startswith("cuda (")
    else:
        with pytest.raises(DeviceUnavailable, match="CUDA is not available"):
            resolve_device("cuda")


def test_model_names_become_safe_directory_names() -> None:
    assert safe_dir_name("ft:HuggingFaceTB/SmolLM2-135M-Instruct:my suffix:abc") == (
        "ft-HuggingFaceTB-SmolLM2-135M-Instruct-my-suffix-abc"
    )


def fake_adapter(directory: Path, payload: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_model.safetensors").write_bytes(payload)
    (directory / "adapter_config.json").write_text("{}")
    return directory


def test_publishing_replaces_an_earlier_adapter_atomically(tmp_path: Path) -> None:
    first = stage_adapter(fake_adapter(tmp_path / "a", b"old"), tmp_path, "ft:m:s:1", attempt=1)
    place_adapter(first)
    second = stage_adapter(fake_adapter(tmp_path / "b", b"newer"), tmp_path, "ft:m:s:1", attempt=2)
    assert (
        first.path / "adapter_model.safetensors"
    ).read_bytes() == b"old"  # staging changes nothing visible
    place_adapter(second)
    assert first.path == second.path == tmp_path / "ft-m-s-1"
    assert (second.path / "adapter_model.safetensors").read_bytes() == b"newer"
    assert second.sha256 == hashlib.sha256(b"newer").hexdigest() and second.size_bytes == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "ft-m-s-1"]  # no staging leftovers


def test_staging_names_differ_per_attempt_and_call_and_a_discarded_one_leaves_nothing(tmp_path: Path) -> None:
    source = fake_adapter(tmp_path / "src", b"w")
    staged = [stage_adapter(source, tmp_path, "ft:m:s:1", attempt=n) for n in (1, 1, 2)]
    names = [s.staging.name for s in staged]
    assert len(set(names)) == 3 and all(str(os.getpid()) in name for name in names)
    assert "-a2-" in names[2] and "-a1-" in names[0]
    for adapter in staged:
        discard_staged(adapter)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_fsync_tree_flushes_every_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_adapter(tmp_path / "x" / "nested", b"w")
    (tmp_path / "x" / "top.json").write_text("{}")
    flushed: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(fd), real_fsync(fd))[1])
    fsync_tree(tmp_path / "x")
    assert len(flushed) == 5  # three files, two folders


def test_metrics_are_recorded_every_step_up_to_200_steps_then_about_200_times() -> None:
    assert [metrics_interval(n) for n in (1, 200, 201, 1000, 10_000)] == [1, 1, 1, 5, 50]


def progress_at(step: int, total: int) -> TrainingProgress:
    return TrainingProgress(
        step=step,
        total_steps=total,
        epoch=0,
        loss=1.0,
        learning_rate=1e-3,
        tokens_per_second=10.0,
        eta_seconds=5.0,
        trained_tokens=step * 10,
    )


def test_reporter_throttles_events_and_heartbeats_but_sees_a_cancel_at_once(
    new_job: Callable[..., str],
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = new_job()
    with sessions.begin() as session:
        claim_job(session, job_id, WORKER)
    beats: list[float] = []
    now = [0.0]

    def counted_heartbeat(session: Session, job: str, worker: str) -> HeartbeatStatus:
        beats.append(now[0])
        return heartbeat(session, job, worker)

    monkeypatch.setattr(lease_module, "heartbeat", counted_heartbeat)  # the guard renews through it
    reporter = JobReporter(
        sessions,
        job_id,
        WORKER,
        fine_tuned_model="ft:m::x",
        heartbeat_interval_s=10.0,
        clock=lambda: now[0],
    )
    for step in range(1, 21):
        now[0] = step * 1.0
        assert reporter.on_progress(progress_at(step, 1000)) is False
    with sessions.begin() as session:
        request_cancel(session, get_job(session, job_id))
    assert reporter.on_progress(progress_at(21, 1000)) is True and reporter.stop_reason == "cancelled"
    assert beats == [10.0, 20.0]  # one heartbeat per 10 s of the fake clock
    with sessions() as session:
        steps = [e.data["step"] for e in session.scalars(select(JobEvent).where(JobEvent.type == "metrics"))]
    assert sorted(steps) == [1, 5, 10, 15, 20]
