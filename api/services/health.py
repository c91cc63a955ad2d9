"""Readiness probes: can the API reach its database and its broker right now?"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import text

from registry.db import get_engine
from registry.queue import check_broker
from registry.settings import Settings

logger = logging.getLogger("api.health")
PROBE_TIMEOUT_S = 5.0
OK = "ok"
# What a failing probe answers: fixed reason codes, never the exception's text.
UNAVAILABLE = "unavailable"
TIMED_OUT = "timed_out"


def check_database(settings: Settings) -> None:
    """Run ``SELECT 1`` on the configured database (raises if it cannot)."""
    with get_engine(settings.database_url).connect() as connection:
        connection.execute(text("SELECT 1"))


async def probe(name: str, check: Callable[[Settings], None], settings: Settings) -> str:
    """Run a blocking check in a thread with a timeout: ``"ok"``, ``"unavailable"`` or ``"timed_out"``."""
    try:
        await asyncio.wait_for(asyncio.to_thread(check, settings), timeout=PROBE_TIMEOUT_S)
    except TimeoutError:
        logger.warning("readiness: %s did not answer within %g s", name, PROBE_TIMEOUT_S)
        return TIMED_OUT
    except Exception:
        # The exception can name hosts, users and paths: it goes to the log, the probe answers a code.
        logger.warning("readiness: %s unavailable", name, exc_info=True)
        return UNAVAILABLE
    return OK


async def readiness(settings: Settings) -> dict[str, str]:
    """The state of each dependency (``{"database": ..., "broker": ...}``), probed concurrently."""
    database, broker = await asyncio.gather(
        probe("database", check_database, settings), probe("broker", check_broker, settings)
    )
    return {"database": database, "broker": broker}
