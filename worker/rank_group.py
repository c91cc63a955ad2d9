"""The ranks of one job on several devices: launched together, stopped together, failed together.

A job that uses more than one device runs as ``torch.distributed.run`` (torchrun's elastic agent) in a process
session of its own. The agent starts one process per device, restarts none (``--max-restarts 0``) and, when a
rank fails or is killed, stops the others and exits non-zero: a job never runs half. Cancel and graceful
shutdown signal the agent, which forwards the signal to every rank; after the grace period every rank (each in
a session of its own, as the agent starts them) and the agent are killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


def devices_per_job(setting: int | None, device: str) -> int:
    """Ranks per job: the setting, else every GPU of a CUDA worker and one process on CPU."""
    if setting is not None:
        return setting
    return torch.cuda.device_count() if device.startswith("cuda") else 1


def strategy_for(ranks: int, requested: str) -> str:
    """The strategy a job's ranks use (``auto``: DDP across several ranks, none for one)."""
    if ranks == 1:
        return "none"
    return "ddp" if requested == "auto" else requested


@dataclass
class RankGroup:
    """A running group of ``ranks`` processes executing ``python -m module *args`` under torchrun.

    Attributes:
        process: The elastic agent (rank processes are its children, in its session).
        ranks: Processes in the group.
    """

    process: subprocess.Popen
    ranks: int

    @classmethod
    def start(
        cls,
        ranks: int,
        module: str,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> RankGroup:
        """Starts the agent on a free local port (``--standalone``); its output goes to ``log``."""
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
        command += ["--max-restarts=0", "-m", module, *args]
        output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it open
        try:
            process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if log:
                output.close()
        return cls(process, ranks)

    def poll(self) -> int | None:
        """The group's exit status once every rank has ended (0 only when all succeeded), else None."""
        return self.process.poll()

    def wait(self, timeout_s: float | None = None) -> int:
        return self.process.wait(timeout_s)

    def rank_pids(self) -> list[int]:
        """Process ids of the running ranks (the agent's children; Linux ``/proc``)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            return []

    def stop(self, grace_s: float = 30.0) -> int:
        """SIGTERM to every rank through the agent; SIGKILL to every rank and the agent after ``grace_s``."""
        ranks = self.rank_pids()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        for pid in [*ranks, self.process.pid]:
            _kill_session(pid)
        return self.process.wait()


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the session has already ended
        os.killpg(pid, signal.SIGKILL)
