"""The job settings `diablo jobs create` takes beyond OpenAI's three: method, precision, quantization, LoRA's
rank and alpha, DPO's beta, early stopping and metadata, and how they map onto the request body."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from diablo_core.models.quantization_names import QUANTIZATIONS
from diablo_core.precision.names import PRECISIONS

METHODS = ("diablo", "lora", "dpo")
LEFT_TO_API = "Left to the API when omitted."

Method = Annotated[
    str,
    typer.Option(
        "--method",
        help="diablo (the default), lora (PEFT LoRA) or dpo (preference pairs, on DiaBlo blocks).",
    ),
]
Precision = Annotated[
    str | None,
    typer.Option("--precision", help=f"{' | '.join(PRECISIONS)}; 'auto' (the default) is bf16 where native."),
]
Quantization = Annotated[
    str | None,
    typer.Option("--quantization", help=f"Train on a {' or '.join(QUANTIZATIONS)} base (bitsandbytes)."),
]
Rank = Annotated[
    int | None, typer.Option("--rank", min=1, help=f"LoRA's rank (--method lora). {LEFT_TO_API}")
]
Alpha = Annotated[
    float | None, typer.Option("--alpha", min=0.0, help=f"LoRA's alpha (--method lora). {LEFT_TO_API}")
]
Beta = Annotated[
    float | None, typer.Option("--beta", min=0.0, help=f"DPO's beta (--method dpo). {LEFT_TO_API}")
]
Patience = Annotated[
    int | None,
    typer.Option(
        "--early-stopping-patience",
        min=1,
        help="Stop after this many evaluations without a lower validation loss; keep the best adapter.",
    ),
]
Metadata = Annotated[
    list[str] | None,
    typer.Option("--metadata", help="KEY=VALUE, repeatable (up to 16 pairs; the API filters jobs by them)."),
]


def method_hyperparameters(
    method: str,
    precision: str | None,
    quantization: str | None,
    rank: int | None,
    alpha: float | None,
    beta: float | None,
    patience: int | None,
) -> dict[str, Any]:
    """The method-specific settings given on the command line; refuses those of another method."""
    if method not in METHODS:
        message = f"expected one of {', '.join(METHODS)}, got {method!r}"
        raise typer.BadParameter(message, param_hint="--method")
    for value, owner, hint in ((rank, "lora", "--rank"), (alpha, "lora", "--alpha"), (beta, "dpo", "--beta")):
        if value is not None and method != owner:
            raise typer.BadParameter(f"only a --method {owner} job takes it", param_hint=hint)
    chosen = {
        "precision": precision, "quantization": quantization, "rank": rank, "alpha": alpha, "beta": beta,
        "early_stopping_patience": patience,
    }  # fmt: skip
    return {key: value for key, value in chosen.items() if value is not None}


def parse_metadata(pairs: list[str] | None) -> dict[str, str] | None:
    """``["team=search", "run=3"]`` -> ``{"team": "search", "run": "3"}`` (the API checks the limits)."""
    if not pairs:
        return None
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--metadata")
        metadata[key] = value
    return metadata
