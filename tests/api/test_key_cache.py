"""The per-process cache of verified API keys, and what one status poll costs the database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from api.main import create_app
from registry.api_keys import VERIFIED_KEY_TTL_S, VerifiedKeys, create_api_key, revoke_api_key, verified_keys
from registry.db import get_engine, session_scope
from registry.models import ApiKey, now_unix
from registry.settings import Settings
from tests.api.conftest import assert_error, create_job, make_settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_remembered_key_is_trusted_until_its_time_runs_out() -> None:
    clock = FakeClock()
    keys = VerifiedKeys(ttl_s=10, clock=clock)
    keys.remember("sqlite:///a.db", "sk-diablo-one", "alpha")
    assert keys.project("sqlite:///a.db", "sk-diablo-one") == "alpha"
    assert keys.project("sqlite:///b.db", "sk-diablo-one") is None  # another database knows nothing of it
    assert keys.project("sqlite:///a.db", "sk-diablo-two") is None
    clock.now += 9.9
    assert keys.project("sqlite:///a.db", "sk-diablo-one") == "alpha"
    clock.now += 0.1
    assert keys.project("sqlite:///a.db", "sk-diablo-one") is None


def test_clear_forgets_every_key_and_a_full_cache_starts_over() -> None:
    keys = VerifiedKeys(max_size=2)
    keys.remember("db", "sk-1", "alpha")
    keys.remember("db", "sk-2", "alpha")
    keys.remember("db", "sk-3", "beta")
    assert [keys.project("db", secret) for secret in ("sk-1", "sk-2", "sk-3")] == [None, None, "beta"]
    keys.clear()
    assert keys.project("db", "sk-3") is None


@pytest.fixture
def auth_settings(tmp_path: Path, database_url: str) -> Settings:
    # No periodic sweep: its queries, 30 s after start on a slow run, would be counted as the poll's.
    return make_settings(tmp_path / "data", database_url, auth="on", sweep_interval_s=0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(verified_keys, "clock", fake)
    return fake


@pytest.fixture
def client(auth_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings), raise_server_exceptions=False) as test_client:
        yield test_client


def _key(settings: Settings, project: str = "alpha") -> str:
    with session_scope(settings.database_url) as session:
        return create_api_key(session, project)[1]


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_a_key_revoked_by_another_process_is_refused_once_its_time_runs_out(
    client: TestClient, auth_settings: Settings, clock: FakeClock
) -> None:
    secret = _key(auth_settings)
    assert client.get("/v1/files", headers=_bearer(secret)).status_code == 200
    with session_scope(auth_settings.database_url) as session:  # as `diablo keys revoke` does, elsewhere
        session.execute(update(ApiKey).values(revoked_at=now_unix()))
    assert client.get("/v1/files", headers=_bearer(secret)).status_code == 200
    clock.now += VERIFIED_KEY_TTL_S
    assert_error(client.get("/v1/files", headers=_bearer(secret)), 401, "invalid_api_key")


def test_a_key_revoked_in_this_process_is_refused_at_once(
    client: TestClient, auth_settings: Settings, clock: FakeClock
) -> None:
    secret, other = _key(auth_settings), _key(auth_settings, "beta")
    for key in (secret, other):
        assert client.get("/v1/files", headers=_bearer(key)).status_code == 200
    with session_scope(auth_settings.database_url) as session:
        assert revoke_api_key(session, secret)
    assert_error(client.get("/v1/files", headers=_bearer(secret)), 401, "invalid_api_key")
    assert client.get("/v1/files", headers=_bearer(other)).status_code == 200


def _statements(settings: Settings, run: Any) -> list[str]:
    """The SQL statements ``run()`` sends to the app's database."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = get_engine(settings.database_url)
    event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def test_a_status_poll_with_a_recently_used_key_runs_two_queries(
    client: TestClient, auth_settings: Settings, clock: FakeClock
) -> None:
    client.headers.update(_bearer(_key(auth_settings)))
    path = f"/v1/fine_tuning/jobs/{create_job(client).json()['id']}"
    polls: list[Any] = []
    statements = _statements(auth_settings, lambda: polls.append(client.get(path)))
    assert polls[0].status_code == 200 and polls[0].json()["status"] == "queued"
    selects = [statement for statement in statements if statement.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2, statements  # the job, then its newest metrics event: no key lookup
    assert "api_keys" not in " ".join(statements)
