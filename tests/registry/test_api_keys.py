"""API keys: created for a project, verified by their secret, listed, revoked by id, prefix or secret."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from registry.api_keys import (
    SECRET_PREFIX,
    TOUCH_INTERVAL_S,
    AmbiguousKeyError,
    create_api_key,
    has_active_key,
    hash_secret,
    list_api_keys,
    revoke_api_key,
    verify_api_key,
)
from registry.models import ApiKey


def test_a_created_key_verifies_as_its_project_and_only_its_hash_is_stored(session: Session) -> None:
    record, secret = create_api_key(session, "alpha", name="ci")
    session.commit()
    assert secret.startswith(SECRET_PREFIX) and len(secret) >= len(SECRET_PREFIX) + 43
    assert record.id.startswith("key-") and record.project_id == "alpha" and record.name == "ci"
    assert record.key_hash == hash_secret(secret) and secret not in {record.key_hash, record.prefix}
    assert secret.startswith(record.prefix) and len(record.prefix) == len(SECRET_PREFIX) + 8
    assert verify_api_key(session, secret) == "alpha"


def test_unknown_and_altered_secrets_do_not_verify(session: Session) -> None:
    _, secret = create_api_key(session, "alpha")
    assert verify_api_key(session, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert verify_api_key(session, "") is None
    assert verify_api_key(session, secret + "x") is None


def test_two_keys_are_different_secrets(session: Session) -> None:
    first, second = create_api_key(session, "alpha")[1], create_api_key(session, "alpha")[1]
    assert first != second


def test_last_used_is_recorded_at_most_once_per_interval(session: Session) -> None:
    record, secret = create_api_key(session, "alpha")
    assert record.last_used_at is None
    verify_api_key(session, secret, now=1_000)
    verify_api_key(session, secret, now=1_000 + TOUCH_INTERVAL_S - 1)
    assert record.last_used_at == 1_000
    verify_api_key(session, secret, now=1_000 + TOUCH_INTERVAL_S)
    assert record.last_used_at == 1_000 + TOUCH_INTERVAL_S


@pytest.mark.parametrize("by", ["id", "prefix", "secret"])
def test_revoked_keys_stop_verifying(session: Session, by: str) -> None:
    record, secret = create_api_key(session, "alpha")
    other, other_secret = create_api_key(session, "alpha")
    handle = {"id": record.id, "prefix": record.prefix, "secret": secret}[by]
    assert revoke_api_key(session, handle) is True
    session.commit()
    assert record.revoked_at is not None and verify_api_key(session, secret) is None
    assert verify_api_key(session, other_secret) == "alpha"
    assert revoke_api_key(session, handle) is False  # already revoked
    assert [key.id for key in list_api_keys(session, "alpha")] == [other.id]
    assert {key.id for key in list_api_keys(session, include_revoked=True)} == {record.id, other.id}


def test_revoking_an_unknown_key_changes_nothing(session: Session) -> None:
    create_api_key(session, "alpha")
    assert revoke_api_key(session, "key-nothing") is False
    assert len(list_api_keys(session)) == 1


def test_a_shared_prefix_is_refused_as_ambiguous(session: Session) -> None:
    first, _ = create_api_key(session, "alpha")
    second, _ = create_api_key(session, "beta")
    second.prefix = first.prefix
    session.flush()
    with pytest.raises(AmbiguousKeyError, match=first.id):
        revoke_api_key(session, first.prefix)
    assert session.query(ApiKey).filter(ApiKey.revoked_at.is_not(None)).count() == 0


def test_keys_are_listed_per_project_newest_first(session: Session) -> None:
    a1, _ = create_api_key(session, "alpha")
    b1, _ = create_api_key(session, "beta")
    a2, _ = create_api_key(session, "alpha")
    assert [key.id for key in list_api_keys(session, "alpha")] == [a2.id, a1.id]
    assert [key.id for key in list_api_keys(session)] == [a2.id, b1.id, a1.id]
    assert has_active_key(session, "beta") and not has_active_key(session, "gamma")
    revoke_api_key(session, b1.id)
    assert not has_active_key(session, "beta")


@pytest.mark.parametrize("project", ["", "-x", "a b", "x" * 65, "proj/1"])
def test_project_names_are_checked(session: Session, project: str) -> None:
    with pytest.raises(ValueError, match="project must be"):
        create_api_key(session, project)
