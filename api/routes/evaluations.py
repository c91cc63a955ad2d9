"""``/v1/evaluations``: score a model's greedy answers on a file of held-out chat examples."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request, Response

from api.rate_limit import RateLimitedCaller
from api.schemas.evaluations import EvaluationCreate, EvaluationPublic
from api.services.evaluations import evaluate_model

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])


@router.post("", response_model=EvaluationPublic)
async def create_evaluation(
    request: Request, response: Response, body: EvaluationCreate, caller: RateLimitedCaller
) -> EvaluationPublic:
    """Answer a file's chat examples greedily with a model and score exact match and containment."""
    result = await evaluate_model(request.app, caller, body.model, body.file)
    response.headers.update(caller.headers())
    samples = [asdict(sample) for sample in result.samples[: body.max_samples]]
    return EvaluationPublic(model=body.model, file=body.file, **result.metrics(), n=result.n, samples=samples)
