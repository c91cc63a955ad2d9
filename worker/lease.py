"""A worker's lease on the job it claimed: renewed for the whole claim, and the fence of visible writes.

``JobLease`` renews the lease from a thread every ``heartbeat_interval_s`` from the claim until the job is
released, so model loading, dataset validation and tokenization, evaluation, checkpoint writing and
publishing never let the sweeper take a healthy job away. The thread stops renewing as soon as the lease is
lost (another worker or the sweeper took the job). The accepted trade-off: a thread beats while the process
lives, so a process wedged in a phase (a hung CUDA call, a deadlock) keeps its job until it is killed; a
dead process stops beating at once.

``fence`` is how a worker replaces anything another worker could see (a checkpoint, pruning, the job's
final adapter): the files are written under a unique staging name and fsynced, then the rename happens
inside a transaction whose first statement renews the lease, so it runs only while this worker holds it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from registry.jobs import HeartbeatStatus, heartbeat
from registry.lease import check_lease
from registry.storage import fsync_dir, fsync_tree

logger = logging.getLogger(__name__)


class JobLease:
    """One claimed job's lease: a renewing thread (``with lease:``) and a fence for visible writes.

    Attributes:
        lost: True once the job is known to be no longer this worker's.
        beats: Renewals the thread has made (tests count them).
    """

    def __init__(
        self, sessions: sessionmaker[Session], job_id: str, worker_id: str, interval_s: float
    ) -> None:
        self.sessions, self.job_id, self.worker_id = sessions, job_id, worker_id
        self.interval_s = interval_s
        self.lost = False
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id}", daemon=True)

    def __enter__(self) -> JobLease:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.sessions.begin() as session:
                    status = heartbeat(session, self.job_id, self.worker_id)
            except Exception:  # a database blip: the next beat tries again, well within the timeout
                logger.warning("job %s: could not renew the lease; retrying", self.job_id, exc_info=True)
                continue
            self.beats += 1
            if status == HeartbeatStatus.LOST:
                self.lost = True
                logger.warning("job %s: lease lost by %s; no longer renewing it", self.job_id, self.worker_id)
                return

    def fence(self, staging: Path, place: Callable[[], None]) -> bool:
        """Flush ``staging`` to disk, then run ``place`` only while this worker holds the lease.

        Returns:
            True if ``place`` ran (and its folder's new entries were flushed); False if the lease is lost.
        """
        fsync_tree(staging)
        with self.sessions.begin() as session:
            if self.lost or check_lease(session, self.job_id, self.worker_id) == HeartbeatStatus.LOST:
                self.lost = True
                logger.warning("job %s: lease lost; not placing %s", self.job_id, staging.name)
                return False
            place()
            fsync_dir(staging.parent)
        return True
