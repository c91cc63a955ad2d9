"""A job's data: find its uploaded files, re-validate them with the tokenizer, tokenize them (one pass).

The API validated the files' structure at upload, and their token counts at job creation when it had the
model's tokenizer (``api.services.example_lengths``); they are checked again here with the model's own
tokenizer, so an example longer than ``max_length`` (or one the chat template cannot render) that the API
could not see fails the job as the user's data problem, with line numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from diablo_core.data.datasets import DEFAULT_LIMITS, PREFERENCE, DatasetLimits, validate_dataset
from diablo_core.data.preferences import PreferencePair
from diablo_core.data.tokenization import TokenizedExample
from diablo_core.errors import DatasetError
from diablo_core.evaluation.examples import EvalExample, read_eval_examples
from registry.errors import error_object
from registry.models import File

MAX_PROBLEMS_SHOWN = 5


class JobDataError(Exception):
    """A problem with the user's data: the job fails with this code and param, and it is not retried."""

    def __init__(self, code: str, param: str, message: str) -> None:
        super().__init__(message)
        self.code, self.param, self.message = code, param, message

    def as_error(self) -> dict[str, Any]:
        """The job's ``error`` object."""
        return error_object(self.code, self.message, self.param)


@dataclass(frozen=True)
class JobFiles:
    """Paths of a job's training and (optional) validation files."""

    training: Path
    validation: Path | None


def longest_example(*example_sets: list[TokenizedExample] | None) -> int:
    """Tokens in the longest example of the sets (a preference pair's longer sequence)."""
    return max(
        (
            e.longest if isinstance(e, PreferencePair) else len(e.input_ids)
            for s in example_sets
            for e in s or []
        ),
        default=1,
    )


def _error(param: str, message: str) -> JobDataError:
    return JobDataError(f"invalid_{param}", param, message)


def _file_path(session: Session, file_id: str, files_dir: Path, param: str) -> Path:
    record = session.get(File, file_id)
    if record is None:
        raise _error(param, f"{param} {file_id} does not exist (it may have been deleted)")
    path = Path(record.storage_path)
    path = path if path.is_absolute() else files_dir / path
    if not path.is_file():
        raise _error(param, f"the content of {param} {file_id} is missing from storage")
    return path


def locate_files(
    session: Session, training_file: str, validation_file: str | None, files_dir: Path
) -> JobFiles:
    """Find a job's files on disk.

    Raises:
        JobDataError: ``invalid_training_file`` / ``invalid_validation_file`` if a file is gone.
    """
    training = _file_path(session, training_file, files_dir, "training_file")
    validation = (
        _file_path(session, validation_file, files_dir, "validation_file") if validation_file else None
    )
    return JobFiles(training=training, validation=validation)


def load_evaluation_file(
    session: Session, file_id: str, files_dir: Path, limits: DatasetLimits = DEFAULT_LIMITS
) -> list[EvalExample]:
    """The held-out chat examples of a job's evaluation file.

    Raises:
        JobDataError: ``invalid_evaluation_file`` naming the problems with their line numbers, or if the
            file is gone.
    """
    path = _file_path(session, file_id, files_dir, "evaluation_file")
    try:
        return read_eval_examples(path, limits=limits)
    except DatasetError as error:
        raise _error("evaluation_file", f"evaluation_file {file_id}: {error.message}") from error


def load_examples(
    path: Path,
    tokenizer: Any,
    max_length: int | None,
    param: str,
    max_tokens: int | None = None,
    limits: DatasetLimits = DEFAULT_LIMITS,
    expected_format: str | None = None,
) -> list[TokenizedExample]:
    """Validate a file against the tokenizer, ``max_length`` (None: any length) and ``max_tokens``,
    tokenizing it in one pass.

    Raises:
        JobDataError: Code ``invalid_<param>`` naming the first problems with their line numbers (or a
            format other than ``expected_format``: ``"preference"`` for a DPO job's pairs), or
            ``file_too_many_tokens`` when the file holds more than ``max_tokens`` tokens.
    """
    examples: list[TokenizedExample] = []
    report = validate_dataset(
        path,
        tokenizer=tokenizer,
        max_length=max_length,
        max_problems=MAX_PROBLEMS_SHOWN,
        limits=limits,
        tokenized=examples,
    )
    if not report.ok:
        shown = "; ".join(problem.message for problem in report.problems)
        more = report.num_problems - len(report.problems)
        suffix = f" (and {more} more)" if more > 0 else ""
        raise _error(param, f"{param} has {report.num_problems} problem(s): {shown}{suffix}")
    if expected_format is not None and (report.format == PREFERENCE) != (expected_format == PREFERENCE):
        message = f"{param} is in {report.format} format; this job's method needs {expected_format} examples"
        raise JobDataError("invalid_file_format", param, message)
    if max_tokens is not None and (report.num_tokens or 0) > max_tokens:
        message = (
            f"{param} has {report.num_tokens} tokens; the limit is {max_tokens} tokens per file "
            "(DIABLO_MAX_TOKENS_PER_FILE): split it or sample from it"
        )
        raise JobDataError("file_too_many_tokens", param, message)
    return examples
