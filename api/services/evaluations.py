"""Evaluations: a model's greedy answers to a project's file of held-out chat examples, scored.

The answers come from the inference engine, like any completion, so base, DiaBlo and LoRA models (and
checkpoints) all evaluate, and the requests count against the caller's rate limits. They are submitted
``inference_max_batch`` at a time, so that one evaluation never fills the project's waiting queue. A file
holds at most ``MAX_EVALUATION_EXAMPLES`` examples; each answer is bounded by its reference's length in
bytes (at least its length in tokens) plus ``ANSWER_MARGIN_TOKENS``, within the server's ``max_tokens``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI

from api.errors import APIError, not_found
from api.rate_limit import Caller
from api.schemas.inference import SamplingParams
from api.services import inference
from api.services.adapter_refs import adapter_ref
from api.services.engine_errors import api_error
from api.services.files import get_file
from diablo_core.data.datasets import DatasetLimits
from diablo_core.errors import DatasetError
from diablo_core.evaluation.examples import (
    EvalExample,
    EvalResult,
    answer_budget,
    read_eval_examples,
    score_answer,
    summarize,
)
from registry.db import get_sessionmaker
from registry.settings import Settings

MAX_EVALUATION_EXAMPLES = 500


def read_file_examples(settings: Settings, project: str, file_id: str) -> list[EvalExample]:
    """The examples of the project's file ``file_id``.

    Raises:
        APIError: 404 for another project's or an unknown file; 400 ``invalid_evaluation_file`` (line
            numbers in the message) or ``evaluation_file_too_large``.
    """
    with get_sessionmaker(settings.database_url)() as session:
        path = Path(get_file(session, project, file_id, param="file").storage_path)
    if not path.is_file():
        raise not_found("file content", file_id, param="file")
    limits = DatasetLimits(settings.max_json_depth, settings.max_turns_per_example)
    try:
        return read_eval_examples(path, MAX_EVALUATION_EXAMPLES, limits)
    except DatasetError as error:
        raise APIError(400, f"File '{file_id}': {error.message}", code=error.code, param="file") from error


async def evaluate_model(app: FastAPI, caller: Caller, model: str, file_id: str) -> EvalResult:
    """Answer every example of ``file_id`` with ``model`` (greedy) and score the answers.

    Raises:
        APIError: As ``read_file_examples``; 404 ``model_not_found``; the completion routes' errors.
    """
    settings: Settings = app.state.settings
    examples = await asyncio.to_thread(read_file_examples, settings, caller.project, file_id)
    await asyncio.to_thread(adapter_ref, settings, caller.project, model)  # 404 before the engine loads
    samples = []
    wave = settings.inference_max_batch
    for start in range(0, len(examples), wave):
        batch = examples[start : start + wave]
        answers = await _answer(app, caller, model, batch)
        samples += [score_answer(text, e.reference, e.line) for text, e in zip(answers, batch, strict=True)]
    return summarize(samples)


async def _answer(app: FastAPI, caller: Caller, model: str, batch: list[EvalExample]) -> list[str]:
    """Greedy answers of one wave, submitted together (the engine batches them); all cancelled on failure."""
    limit = app.state.settings.max_tokens_limit
    handles = []
    try:
        for example in batch:
            budget = min(limit, answer_budget(len(example.reference.encode())))
            body = SamplingParams(model=model, max_tokens=budget, temperature=0)
            handles.append(await inference.start(app, caller, body, messages=example.messages))
        results = await asyncio.gather(*(handle.aresult() for handle in handles))
    except BaseException as error:
        for handle in handles:
            handle.cancel()
        if isinstance(error, Exception) and not isinstance(error, APIError):
            raise api_error(error, model) from error
        raise
    return [result.text for result in results]
