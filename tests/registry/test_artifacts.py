from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from registry.artifacts import (
    add_checkpoint,
    checkpoint_model_name,
    delete_adapter,
    fine_tuned_model_name,
    get_adapter,
    list_adapters,
    list_checkpoints,
    register_adapter,
    sanitize_suffix,
)
from registry.jobs import create_job
from registry.models import Adapter


@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        (None, ""),
        ("my-model_v1.2", "my-model_v1.2"),
        ("my model/with:odd chars!", "my-model-with-odd-chars"),
        ("x" * 80, "x" * 64),
    ],
)
def test_sanitize_suffix(suffix: str | None, expected: str) -> None:
    assert sanitize_suffix(suffix) == expected


def test_model_names() -> None:
    job_id = "ftjob-0661591b40a65eb321c7cde4"
    name = fine_tuned_model_name("HuggingFaceTB/SmolLM2-135M-Instruct", job_id, "support bot")
    assert name == "ft:HuggingFaceTB/SmolLM2-135M-Instruct:support-bot:0661591b40a65eb321c7cde4"
    assert fine_tuned_model_name("base", job_id) == "ft:base::0661591b40a65eb321c7cde4"
    assert checkpoint_model_name(name, 50) == f"{name}:ckpt-step-50"


def test_checkpoints_are_one_per_step_and_page_newest_first(session: Session) -> None:
    job = create_job(session, model="base", training_file="file-a")
    for step in (10, 20, 30):
        add_checkpoint(session, job.id, step, f"ft:base::x:ckpt-step-{step}", metrics={"step": step})
    again = add_checkpoint(session, job.id, 20, "ckpt-20", storage_path="/a", metrics={"a": 1})
    session.commit()
    page = list_checkpoints(session, job.id, limit=2)
    assert [c.step_number for c in page.data] == [30, 20] and page.has_more
    assert page.data[1].id == again.id and page.data[1].metrics == {"a": 1}
    assert page.data[1].fine_tuned_model_checkpoint == "ckpt-20"
    rest = list_checkpoints(session, job.id, after=page.data[-1].id)
    assert [c.step_number for c in rest.data] == [10] and not rest.has_more


def _register(session: Session, name: str, job_id: str | None, **fields: object) -> Adapter:
    values: dict[str, object] = {
        "base_model": "base",
        "storage_path": f"/data/adapters/{name}",
        "sha256": "ab" * 32,
        "size_bytes": 1234,
    }
    return register_adapter(session, name=name, job_id=job_id, **(values | fields))


def test_adapter_registration_lookup_and_replacement(session: Session) -> None:
    job = create_job(session, model="base", training_file="file-a")
    _register(session, "ft:base::a", job.id, base_model_fingerprint="sha256:00", config={"block": 16})
    _register(session, "ft:base::b", None, project_id="other")
    session.commit()
    adapter = get_adapter(session, "ft:base::a")
    assert adapter is not None
    assert (adapter.job_id, adapter.size_bytes, adapter.config) == (job.id, 1234, {"block": 16})
    assert get_adapter(session, "ft:base::a", project_id="other") is None
    _register(session, "ft:base::a", job.id, sha256="cd" * 32, size_bytes=99)
    session.commit()
    replaced = get_adapter(session, "ft:base::a")
    assert replaced is not None and (replaced.sha256, replaced.size_bytes) == ("cd" * 32, 99)
    assert [a.name for a in list_adapters(session, project_id="default")] == ["ft:base::a"]
    assert {a.name for a in list_adapters(session)} == {"ft:base::a", "ft:base::b"}


def test_deleting_a_job_keeps_its_adapter(session: Session) -> None:
    job = create_job(session, model="base", training_file="file-a")
    _register(session, "ft:base::kept", job.id)
    session.commit()
    session.delete(job)
    session.commit()
    adapter = session.get_one(Adapter, "ft:base::kept", populate_existing=True)
    assert adapter.job_id is None


def test_delete_adapter(session: Session) -> None:
    _register(session, "ft:base::gone", None)
    session.commit()
    assert delete_adapter(session, "ft:base::gone", project_id="other") is False
    assert delete_adapter(session, "ft:base::gone") is True
    session.commit()
    assert get_adapter(session, "ft:base::gone") is None
    assert delete_adapter(session, "ft:base::gone") is False
