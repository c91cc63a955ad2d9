"""Who waits and who goes next: a bounded waiting queue, fair across tenants, and a turnover estimate.

Each tenant (a project; None is one shared tenant) has its own queue. Admission takes the tenants in the
order they were last served, least recently first, one request each per round, so that while one tenant
floods the engine another tenant's request takes the next free row. Bounds on the whole queue and on each
tenant's share make ``submit`` refuse early (:class:`EngineBusyError`) instead of queueing without end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest

from diablo_core.serving.errors import EngineBusyError
from diablo_core.serving.handle import RequestHandle

MIN_RETRY_AFTER_S = 1.0


@dataclass(eq=False)
class Waiting:
    """A submitted request before it is admitted: its handle and tokenized prompt."""

    handle: RequestHandle
    prompt_ids: list[int]

    @property
    def tenant(self) -> str | None:
        return self.handle.request.tenant


class TurnoverClock:
    """When rows recently left the batch, to estimate how long a new request would wait for a row."""

    def __init__(self, window: int = 64) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def record(self, now: float, count: int = 1) -> None:
        self._times.extend([now] * count)

    def retry_after(self, ahead: int) -> float:
        """Seconds for ``ahead`` more rows to leave at the recent rate; at least 1 s (also when unknown)."""
        times = self._times
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        if span <= 0:
            return MIN_RETRY_AFTER_S
        rate = (len(times) - 1) / span  # rows per second
        return max(MIN_RETRY_AFTER_S, ahead / rate)


class AdmissionQueue:
    """Waiting requests per tenant, bounded in total and per tenant, handed out in round-robin order.

    Args:
        max_waiting: Most waiting requests in all (None: no bound).
        max_waiting_per_tenant: Most waiting requests of one tenant (None: no bound).
    """

    def __init__(self, max_waiting: int | None = None, max_waiting_per_tenant: int | None = None) -> None:
        for name, bound in (("max_waiting", max_waiting), ("max_waiting_per_tenant", max_waiting_per_tenant)):
            if bound is not None and bound < 1:
                raise ValueError(f"{name} must be positive or None, got {bound}")
        self.max_waiting, self.max_waiting_per_tenant = max_waiting, max_waiting_per_tenant
        self._queues: dict[str | None, deque[Waiting]] = {}
        self._served: dict[str | None, int] = {}  # tenant -> admission turn it was last served at
        self._turn = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Waiting]:
        return (item for queue in list(self._queues.values()) for item in queue)

    def put(self, item: Waiting, clock: TurnoverClock) -> None:
        """Queues ``item``; raises :class:`EngineBusyError` when the queue or the tenant's share is full."""
        tenant = item.tenant
        queue = self._queues.get(tenant, ())
        if self.max_waiting is not None and self._size >= self.max_waiting:
            message = f"the inference engine has {self._size} requests waiting, its limit; retry later"
            raise EngineBusyError(message, "engine_overloaded", clock.retry_after(self._size))
        if self.max_waiting_per_tenant is not None and len(queue) >= self.max_waiting_per_tenant:
            # Round robin gives this tenant one row in every len(self._queues) that free up.
            ahead = len(queue) * len(self._queues)
            message = f"this project has {len(queue)} requests waiting, its limit; retry later"
            raise EngineBusyError(message, "tenant_queue_full", clock.retry_after(ahead))
        self._queues.setdefault(tenant, deque()).append(item)
        self._size += 1

    def remove(self, item: Waiting) -> None:
        queue = self._queues[item.tenant]
        queue.remove(item)
        self._size -= 1
        if not queue:
            del self._queues[item.tenant]
            self._served.pop(item.tenant, None)

    def served(self, tenant: str | None) -> None:
        """Marks ``tenant`` as just served: it goes behind every tenant that waits longer."""
        self._turn += 1
        self._served[tenant] = self._turn

    def fair_order(self) -> list[Waiting]:
        """Every waiting request, round robin over tenants, the least recently served tenant first."""
        tenants = sorted(self._queues, key=lambda t: (self._served.get(t, 0), self._queues[t][0].handle.id))
        rounds = zip_longest(*(self._queues[tenant] for tenant in tenants))
        return [item for round_ in rounds for item in round_ if item is not None]

    def drain(self) -> list[Waiting]:
        items = list(self)
        self._queues.clear()
        self._served.clear()
        self._size = 0
        return items
