"""What a running job reports: the API's names for diablo_core's metrics, and when the job should finish.

diablo_core names its metrics as training sees them (``loss``, ``eval_accuracy``); the API uses OpenAI's
names (``train_loss``, ``valid_mean_token_accuracy``). The renaming happens here only, for every metrics
event and checkpoint the worker records. A job's ``estimated_finish`` is also computed here only: the worker
stores one from training's own estimate, and the API falls back to the pace so far when none is stored.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

# diablo_core's metric name -> the API's; a metric not listed here is not reported.
API_METRIC_NAMES: dict[str, str] = {
    "step": "step",
    "total_steps": "total_steps",
    "loss": "train_loss",
    "accuracy": "train_mean_token_accuracy",
    "eval_loss": "valid_loss",
    "eval_accuracy": "valid_mean_token_accuracy",
    "learning_rate": "learning_rate",
    "tokens_per_second": "tokens_per_second",
    "epoch": "epoch",
    "eta_seconds": "eta_seconds",
    "precision": "precision",  # the run's resolved precision ("fp32", "bf16", "fp16")
    # DPO (diablo_core.training.dpo): implicit-reward margin and accuracy of preferred over non-preferred.
    "reward_margin": "train_reward_margin",
    "reward_accuracy": "train_reward_accuracy",
    "eval_reward_margin": "valid_reward_margin",
    "eval_reward_accuracy": "valid_reward_accuracy",
    # Held-out answers (an evaluation file, diablo_core.evaluation): the same names in the API.
    "eval_exact_match": "eval_exact_match",
    "eval_contains": "eval_contains",
}

# The data key of the event a job records once its method is applied: how many (adapter) parameters train.
TRAINABLE_PARAMETERS = "trainable_parameters"

# Every validation pass covers the whole validation set, so OpenAI's full-set metrics (``full_valid_*``, which
# OpenAI computes at epoch ends besides its sampled per-step ``valid_*``) carry the same numbers.
FULL_VALID_NAMES: dict[str, str] = {
    "valid_loss": "full_valid_loss",
    "valid_mean_token_accuracy": "full_valid_mean_token_accuracy",
}

# What a checkpoint's row keeps (OpenAI's checkpoint metrics), under the API's names.
CHECKPOINT_METRICS = frozenset(
    {
        "step",
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        *FULL_VALID_NAMES.values(),
        "train_reward_margin",
        "train_reward_accuracy",
        "valid_reward_margin",
        "valid_reward_accuracy",
        "eval_exact_match",
        "eval_contains",
    }
)
# The columns of a job's step-metrics result file (OpenAI's ``step_metrics.csv``), each from an API name.
RESULT_COLUMNS: dict[str, str] = {
    "step": "step",
    "train_loss": "train_loss",
    "train_accuracy": "train_mean_token_accuracy",
    "valid_loss": "valid_loss",
    "valid_mean_token_accuracy": "valid_mean_token_accuracy",
    "full_valid_loss": "full_valid_loss",
    "full_valid_mean_token_accuracy": "full_valid_mean_token_accuracy",
}
# Columns after OpenAI's, present only in the results of jobs that measured them (an evaluation file).
MEASURED_COLUMNS = ("eval_exact_match", "eval_contains")


def api_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` under the API's names, in their order, without those the API does not report; validation
    metrics also under their ``full_valid_*`` names."""
    named = {API_METRIC_NAMES[key]: value for key, value in metrics.items() if key in API_METRIC_NAMES}
    return named | {FULL_VALID_NAMES[key]: named[key] for key in FULL_VALID_NAMES if key in named}


def eval_metrics(step: int, metrics: dict[str, float]) -> dict[str, Any]:
    """An evaluation's metrics (``loss``, ``accuracy`` of the validation set; ``exact_match``, ``contains``
    of the evaluation file's answers) under the API's names."""
    return api_metrics({"step": step, **{f"eval_{key}": value for key, value in metrics.items()}})


def checkpoint_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's metrics (training's, with ``eval_``-prefixed validation ones) under the API's names."""
    return {key: value for key, value in api_metrics(metrics).items() if key in CHECKPOINT_METRICS}


def results_csv(history: list[dict[str, Any]]) -> str:
    """A run's step-metrics CSV (``RESULT_COLUMNS``, then the ``MEASURED_COLUMNS`` the run has; one row per
    step, empty cells where nothing was measured) from training's history: per-step records and evaluation
    records (``eval_``-prefixed) of the same step."""
    rows: dict[int, dict[str, Any]] = {}
    for record in history:
        if isinstance(record.get("step"), int):
            rows.setdefault(record["step"], {}).update(api_metrics(record))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    measured = [name for name in MEASURED_COLUMNS if any(name in row for row in rows.values())]
    writer.writerow([*RESULT_COLUMNS, *measured])
    for step in sorted(rows):
        writer.writerow(_cell(rows[step].get(name)) for name in [*RESULT_COLUMNS.values(), *measured])
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def estimated_finish(
    now: int,
    *,
    eta_seconds: float | None = None,
    started_at: int | None = None,
    step: int | None = None,
    total_steps: int | None = None,
) -> int | None:
    """The unix time a running job should finish.

    From training's own estimate when given (``now + eta_seconds``), else by extrapolating the pace from
    ``started_at`` to ``now`` (when step ``step`` was reported) over ``total_steps``; else None.
    """
    if eta_seconds is not None:
        return now + math.ceil(eta_seconds)
    if started_at is None or not total_steps or step is None or step <= 0:
        return None
    elapsed = max(0, now - started_at)
    return started_at + round(elapsed * total_steps / step)
