"""The tokens-per-file limit, checked by the worker (the API has no tokenizer): the job fails as the user's
data problem with code ``file_too_many_tokens``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from diablo_core.data.datasets import validate_dataset
from registry.jobs import get_job
from registry.settings import Settings
from tests.core.tiny_tokenizer import make_tiny_tokenizer
from tests.worker.conftest import chat_example, jsonl
from worker.job_inputs import JobDataError, load_examples
from worker.training_job import run_training_job


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, int]:
    """Six chat examples and their number of tokens under the tiny tokenizer."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl([chat_example(index) for index in range(6)]))
    tokens = validate_dataset(path, tokenizer=make_tiny_tokenizer(), max_length=256).num_tokens
    assert tokens is not None and tokens > 0
    return path, tokens


def test_a_file_at_the_limit_loads_and_one_token_more_fails(dataset: tuple[Path, int]) -> None:
    path, tokens = dataset
    tokenizer = make_tiny_tokenizer()
    assert len(load_examples(path, tokenizer, 256, "training_file", max_tokens=tokens)) == 6
    with pytest.raises(JobDataError) as raised:
        load_examples(path, tokenizer, 256, "validation_file", max_tokens=tokens - 1)
    error = raised.value.as_error()
    assert (error["code"], error["param"]) == ("file_too_many_tokens", "validation_file")
    assert f"{tokens} tokens" in error["message"] and f"limit is {tokens - 1}" in error["message"]


def test_a_job_on_a_file_over_the_limit_fails_with_a_clear_error(
    new_job: Callable[..., str], sessions: sessionmaker[Session], settings: Settings
) -> None:
    job_id = new_job()
    limited = settings.model_copy(update={"max_tokens_per_file": 10})
    assert run_training_job(job_id, limited, "test-worker:1") == "failed"
    with sessions() as session:
        job = get_job(session, job_id)
    assert job.error["code"] == "file_too_many_tokens" and job.error["param"] == "training_file"
    assert job.fine_tuned_model is None
