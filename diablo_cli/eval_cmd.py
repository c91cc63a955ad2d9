"""``diablo eval MODEL --file F``: score a model's greedy answers on held-out chat examples.

``F`` is a local JSONL file, uploaded first (its id goes to stderr), or the id of an uploaded file. The API
(``POST /v1/evaluations``) answers each example's prompt with the model and compares the answer with the
example's last assistant message: exact match and contains, after stripping whitespace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from diablo_cli.client import DEFAULT_BASE_URL, DiabloClient
from diablo_cli.connection import (
    ApiKeyOption,
    BaseUrlOption,
    JsonOption,
    connect,
    print_json,
    stderr_console,
    stdout_console,
)

SHOWN_ANSWERS = 20


def file_id_of(client: DiabloClient, file: str) -> str:
    """The id of ``file``: a local path is uploaded first, anything else is taken as a file id."""
    path = Path(file)
    if not path.is_file():
        return file
    uploaded = client.upload_file(path)
    stderr_console().print(f"Uploaded {path.name} as {uploaded['id']}", markup=False)
    return uploaded["id"]


def answers_table(samples: list[dict[str, Any]]) -> Table:
    """The scored answers: line, reference, answer and the two scores."""
    table = Table("line", "reference", "answer", "exact", "contains", box=None)
    for sample in samples:
        marks = ["yes" if sample[key] else "no" for key in ("exact_match", "contains")]
        table.add_row(str(sample["line"]), sample["reference"], sample["answer"], *marks)
    return table


def evaluate(
    model: Annotated[str, typer.Argument(help="A base or fine-tuned model (or checkpoint) name.")],
    file: Annotated[
        str, typer.Option("--file", help="A local chat JSONL file, or the id of an uploaded one.")
    ],
    answers: Annotated[bool, typer.Option("--answers", help="Also list the scored answers.")] = False,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Score a model's greedy answers to held-out chat examples: exact match, contains, count."""
    with connect(base_url, api_key) as client:
        file_id = file_id_of(client, file)
        result = client.create_evaluation({"model": model, "file": file_id, "max_samples": SHOWN_ANSWERS})
    if json_output:
        print_json(result)
        return
    console = stdout_console()
    line = f"exact match {result['exact_match']:.3f}, contains {result['contains']:.3f}, n {result['n']}"
    console.print(line, markup=False, highlight=False)
    if answers:
        console.print(answers_table(result["samples"]))
