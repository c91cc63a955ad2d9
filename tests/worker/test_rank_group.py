"""A job's ranks under torchrun fail together: kill one rank mid-run and no rank keeps running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.process_helpers import is_running
from worker.rank_group import RankGroup, devices_per_job, strategy_for

ROOT = Path(__file__).resolve().parents[2]


def test_devices_and_strategy_follow_the_setting_and_the_device() -> None:
    assert devices_per_job(None, "cpu") == 1 and devices_per_job(3, "cpu") == 3
    assert strategy_for(1, "fsdp") == "none"
    assert strategy_for(2, "auto") == "ddp" and strategy_for(4, "fsdp") == "fsdp"


def start_long_run(tmp_path: Path) -> RankGroup:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [str(tmp_path / "run"), "ddp", "--max-steps", "100000"]
    return RankGroup.start(2, "tests.core.distributed_run", args, cwd=ROOT, env=env, log=tmp_path / "log")


def wait_until_training(group: RankGroup, tmp_path: Path) -> list[int]:
    """Waits for the first checkpoint (every rank is past start-up and in the loop); returns the rank pids."""
    deadline = time.monotonic() + 180
    while not (tmp_path / "run" / "checkpoints" / "step-3").exists():
        assert group.poll() is None, (tmp_path / "log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the ranks never reached step 3"
        time.sleep(0.2)
    ranks = group.rank_pids()
    assert len(ranks) == 2
    return ranks


@pytest.mark.slow
def test_a_killed_rank_fails_the_whole_job(tmp_path: Path) -> None:
    group = start_long_run(tmp_path)
    try:
        ranks = wait_until_training(group, tmp_path)
        os.kill(ranks[1], signal.SIGKILL)
        assert group.wait(120) != 0
        assert not any(is_running(pid) for pid in ranks)
    finally:
        group.stop(grace_s=5)


@pytest.mark.slow
def test_stop_reaches_every_rank(tmp_path: Path) -> None:
    group = start_long_run(tmp_path)
    try:
        ranks = wait_until_training(group, tmp_path)
        group.stop(grace_s=30)
        assert not any(is_running(pid) for pid in ranks)
        assert group.poll() is not None
    finally:
        group.stop(grace_s=5)
