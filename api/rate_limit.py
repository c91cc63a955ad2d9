"""Per-key request and token rate limits of the inference routes: token buckets held in this process.

Each API key (each project when authentication is off) has two buckets, refilled continuously: one of
``rate_limit_requests_per_minute`` requests and one of ``rate_limit_tokens_per_minute`` tokens. A request
takes one request when it arrives and its ``max_tokens`` budget of tokens before it is queued; when it ends,
the count is reconciled: its prompt tokens are taken and the unused part of the budget is given back, so a
caller's bucket may go below zero after a long prompt and its next request waits for the refill. The
buckets live in the API process, so N API processes allow N times the limit. A limit of 0 is off.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from api.deps import BearerCredentials, CurrentProject
from api.errors import RATE_LIMIT, APIError
from registry.settings import Settings

STATE_KEY = "rate_limiter"
SECONDS_PER_MINUTE = 60.0


@dataclass
class Bucket:
    """``capacity`` units, refilled at ``capacity`` per minute; ``level`` is what is left."""

    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.capacity, self.level + elapsed * self.capacity / SECONDS_PER_MINUTE)
        self.updated = now

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` units are there (``inf`` when more than the capacity)."""
        if amount > self.capacity:
            return math.inf
        return max(0.0, amount - self.level) * SECONDS_PER_MINUTE / self.capacity


class RateLimiter:
    """The buckets of every caller, by kind (``requests``, ``tokens``); thread-safe."""

    def __init__(self, limits: dict[str, int], clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = {kind: limit for kind, limit in limits.items() if limit > 0}
        self._clock = clock
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: Settings) -> RateLimiter:
        return cls(
            {
                "requests": settings.rate_limit_requests_per_minute,
                "tokens": settings.rate_limit_tokens_per_minute,
            }
        )

    def _bucket(self, caller: str, kind: str, now: float) -> Bucket | None:
        """The caller's ``kind`` bucket (full when new) refilled up to ``now``; None when that limit is off.

        The caller holds the lock.
        """
        limit = self.limits.get(kind)
        if limit is None:
            return None
        bucket = self._buckets.setdefault((caller, kind), Bucket(limit, limit, now))
        bucket.refill(now)
        return bucket

    def take(self, caller: str, kind: str, amount: int) -> None:
        """Takes ``amount`` from the caller's ``kind`` bucket.

        Raises:
            APIError: 429 ``rate_limit_exceeded`` with ``Retry-After`` and ``x-ratelimit-*`` headers.
        """
        with self._lock:
            bucket = self._bucket(caller, kind, self._clock())
            if bucket is None:
                return
            if bucket.level >= amount:
                bucket.level -= amount
                return
            wait_s, remaining = bucket.wait_s(amount), max(0, int(bucket.level))
        raise _limited(kind, self.limits[kind], amount, wait_s, remaining)

    def headers(self, caller: str) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers of the caller's limits that are on (none when all are off)."""
        now, headers = self._clock(), {}
        with self._lock:
            for kind, limit in self.limits.items():
                bucket = self._bucket(caller, kind, now)
                assert bucket is not None  # every kind in self.limits is on
                headers[f"x-ratelimit-limit-{kind}"] = str(limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(bucket.level)))
                headers[f"x-ratelimit-reset-{kind}"] = f"{math.ceil(bucket.wait_s(limit))}s"  # until full
        return headers

    def settle(self, caller: str, kind: str, amount: int) -> None:
        """Takes ``amount`` (gives back when negative) without a check: the level may go below zero."""
        with self._lock:
            bucket = self._bucket(caller, kind, self._clock())
            if bucket is not None:
                bucket.level = min(bucket.capacity, bucket.level - amount)


def _limited(kind: str, limit: int, amount: int, wait_s: float, remaining: int) -> APIError:
    if math.isinf(wait_s):
        message = f"This request needs {amount} {kind}, more than your limit of {limit} {kind} per minute"
        wait_s = SECONDS_PER_MINUTE
    else:
        message = f"Rate limit of {limit} {kind} per minute reached; retry in {math.ceil(wait_s)} s"
    retry_after = max(1, math.ceil(wait_s))
    headers = {
        "Retry-After": str(retry_after),
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(remaining),
        f"x-ratelimit-reset-{kind}": f"{retry_after}s",
    }
    return APIError(429, message, RATE_LIMIT, "rate_limit_exceeded", headers=headers)


def rate_limiter(request: Request) -> RateLimiter:
    """The app's limiter, made from its settings on first use."""
    limiter = getattr(request.app.state, STATE_KEY, None)
    if limiter is None:
        limiter = RateLimiter.of(request.app.state.settings)
        setattr(request.app.state, STATE_KEY, limiter)
    return limiter


@dataclass(frozen=True)
class Caller:
    """Who sends an inference request: its project and the key its rate limits are counted under."""

    project: str
    key: str
    limiter: RateLimiter

    def take_tokens(self, amount: int) -> None:
        self.limiter.take(self.key, "tokens", amount)

    def settle_tokens(self, amount: int) -> None:
        self.limiter.settle(self.key, "tokens", amount)

    def headers(self) -> dict[str, str]:
        return self.limiter.headers(self.key)


async def limited_caller(
    request: Request, project: CurrentProject, credentials: BearerCredentials = None
) -> Caller:
    """The caller, after taking one request from its bucket (429 ``rate_limit_exceeded`` when empty)."""
    if request.app.state.settings.auth == "off" or credentials is None:
        key = f"project:{project}"
    else:  # a digest: the buckets never hold a usable secret
        key = "key:" + hashlib.sha256(credentials.credentials.encode()).hexdigest()
    limiter = rate_limiter(request)
    limiter.take(key, "requests", 1)
    return Caller(project, key, limiter)


RateLimitedCaller = Annotated[Caller, Depends(limited_caller)]
