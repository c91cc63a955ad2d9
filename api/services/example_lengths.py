"""A job's examples counted with its model's tokenizer when the job is created: ``max_length`` checked and
"auto" resolved before the job is queued.

The tokenizer is ``diablo_core.data.template_tokenizer`` (tokenizers and jinja2; no torch or transformers in
the API), read from the base model's directory: a local checkpoint, or the default model once it has been
converted under ``<data_dir>/models/``. Where the API has no tokenizer for the model, the job keeps "auto"
and the worker checks and resolves it when it starts.

Counting a file renders and tokenizes every example (about a millisecond each on a CPU core), so the result
is cached on disk per file content (sha256), model tokenizer (its files' fingerprint) and dataset limits:
creating more jobs, or dry runs, on the same file costs a small JSON read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from api.errors import APIError
from api.services.files import invalid_file
from diablo_core.data.datasets import DatasetLimits, validate_dataset
from diablo_core.data.template_tokenizer import TOKENIZER_FILE, TemplateTokenizer, context_length, fingerprint
from diablo_core.models.catalog import DEFAULT_CHECKPOINT_DIR
from diablo_core.spec import ResolvedJobSpec
from diablo_core.spec.hyperparameters import AUTO
from registry.base_models import find_base_model
from registry.models import File
from registry.settings import Settings
from registry.storage import models_dir, token_counts_dir

CACHE_VERSION = 1
logger = logging.getLogger("api.jobs")


class UnreadableTokenizer(Exception):
    """The model's tokenizer files exist but cannot be read: the job is left for its worker to check."""


@dataclass(frozen=True)
class FileLengths:
    """One file's example lengths under one tokenizer.

    ``longest_lines`` are ``(line, tokens)`` of each example longer than every one before it (the last is
    the longest), so the first line over any limit is the first of them over it.
    """

    longest_lines: list[tuple[int, int]]
    num_tokens: int

    @property
    def longest(self) -> int:
        return self.longest_lines[-1][1] if self.longest_lines else 0

    def first_over(self, limit: int) -> tuple[int, int] | None:
        """``(line, tokens)`` of the first example with more than ``limit`` tokens (None: all fit)."""
        return next((entry for entry in self.longest_lines if entry[1] > limit), None)


@dataclass(frozen=True)
class CountedFiles:
    """A job's files counted: the spec with ``max_length`` resolved, and the training file's tokens."""

    spec: ResolvedJobSpec
    training_tokens: int | None  # None: not counted here (no tokenizer for the model)


def fit_example_lengths(
    settings: Settings, model: str, spec: ResolvedJobSpec, files: dict[str, File]
) -> CountedFiles:
    """Check every example of ``files`` (param -> file) against the spec's ``max_length`` and resolve "auto".

    Raises:
        APIError: 400 ``example_too_long`` naming the file and the first line that does not fit;
            ``invalid_file`` when the chat template cannot render an example.
    """
    directory = tokenizer_directory(model, settings)
    if directory is None:
        return CountedFiles(spec, None)
    try:
        context = _context_length(directory)
        counted = {param: count_file(settings, model, directory, row, param) for param, row in files.items()}
    except UnreadableTokenizer:
        logger.warning(
            "cannot read the tokenizer of %s in %s; its worker checks max_length", model, directory
        )
        return CountedFiles(spec, None)
    limit = spec.length_limit(context)
    for param, lengths in counted.items():
        over = None if limit is None else lengths.first_over(limit)
        if over is not None:
            raise _too_long(param, files[param].id, over, spec.max_length, limit)
    longest = max(lengths.longest for lengths in counted.values())
    return CountedFiles(spec.fit_max_length(longest, context), counted["training_file"].num_tokens)


def tokenizer_directory(model_id: str, settings: Settings) -> Path | None:
    """The directory of the base model's ``tokenizer.json`` and ``config.json`` when they are on this machine:
    a local checkpoint's, or the default model's once converted; None otherwise."""
    model = find_base_model(model_id, settings)
    if model is None:
        return None
    directory = model.path or models_dir(settings) / DEFAULT_CHECKPOINT_DIR
    return directory if (directory / TOKENIZER_FILE).is_file() else None


def count_file(settings: Settings, model: str, directory: Path, row: File, param: str) -> FileLengths:
    """The file's example lengths under the model's tokenizer, from the cache or counted (and cached)."""
    limits = DatasetLimits(settings.max_json_depth, settings.max_turns_per_example)
    key = f"{CACHE_VERSION}|{row.sha256}|{model}|{fingerprint(directory)}|{limits}"
    path = token_counts_dir(settings) / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
    cached = _read_cache(path)
    if cached is not None:
        return cached
    try:
        tokenizer = _tokenizer(str(directory), fingerprint(directory))
    except Exception as error:  # a broken tokenizer.json or config is the operator's, not the request's
        raise UnreadableTokenizer(str(directory)) from error
    report = validate_dataset(row.storage_path, tokenizer=tokenizer, limits=limits)
    if not report.ok:  # the chat template refused an example: the worker would fail the job alike
        error = invalid_file(report)
        error.param = param
        raise error
    lengths = FileLengths([tuple(entry) for entry in report.longest_lines], report.num_tokens or 0)
    _write_cache(path, lengths)
    return lengths


def _too_long(param: str, file_id: str, over: tuple[int, int], max_length: int | str, limit: int) -> APIError:
    line, tokens = over
    by_context = max_length == AUTO or int(max_length) > limit  # the model's context is the binding limit
    rule = f"the model's context length {limit}" if by_context else f"max_length {limit}"
    rule += " (max_length is auto)" if max_length == AUTO else ""
    message = (
        f"{param} {file_id}: line {line}: example has {tokens} tokens, more than {rule}; "
        "shorten or drop that example" + ("" if by_context else " or raise max_length")
    )
    extra = {"file": file_id, "line": line, "tokens": tokens, "limit": limit}
    return APIError(400, message, code="example_too_long", param=param, extra=extra)


def _context_length(directory: Path) -> int | None:
    try:
        return context_length(directory)
    except (OSError, ValueError) as error:  # config.json unreadable or not JSON
        raise UnreadableTokenizer(str(directory)) from error


@lru_cache(maxsize=4)
def _tokenizer(directory: str, files_fingerprint: str) -> TemplateTokenizer:
    del files_fingerprint  # part of the cache key only: changed files are read again
    return TemplateTokenizer.from_directory(directory)


def _read_cache(path: Path) -> FileLengths | None:
    try:
        data = json.loads(path.read_text())
        return FileLengths(
            [(int(line), int(tokens)) for line, tokens in data["longest_lines"]], data["num_tokens"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: count again


def _write_cache(path: Path, lengths: FileLengths) -> None:
    """Written to a temporary sibling and renamed: a concurrent reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps({"longest_lines": lengths.longest_lines, "num_tokens": lengths.num_tokens})
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        stream.write(payload)
    os.replace(staging, path)
