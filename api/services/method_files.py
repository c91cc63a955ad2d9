"""Which file format each training method takes: preference pairs for ``dpo``, chat or prompt/completion for
the others; an evaluation file is chat examples whose last assistant message is the reference answer. A file
of the wrong kind is refused when the job is created, naming what the method needs."""

from __future__ import annotations

from api.errors import APIError
from diablo_core.data.datasets import CHAT, PREFERENCE, PROMPT_COMPLETION, file_format
from diablo_core.data.preferences import PREFERENCE_EXAMPLE
from diablo_core.errors import DatasetError
from diablo_core.evaluation.examples import read_eval_examples
from diablo_core.spec.preference import DPO_TYPE
from registry.models import File

CHAT_EXAMPLE = '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}'


def check_file_format(row: File, method_type: str, param: str) -> None:
    """400 ``invalid_file_format`` naming ``param`` when the file's format is not the method's."""
    found = file_format(row.storage_path)
    if method_type == DPO_TYPE and found != PREFERENCE:
        message = (
            f"File '{row.id}' is in {found} format, but a dpo job needs preference pairs, one per line: "
            f"{PREFERENCE_EXAMPLE}"
        )
        raise APIError(400, message, code="invalid_file_format", param=param)
    if method_type != DPO_TYPE and found not in (CHAT, PROMPT_COMPLETION):
        message = (
            f"File '{row.id}' is in {found} format, but a {method_type} job needs chat examples "
            f"({CHAT_EXAMPLE}) or prompt/completion pairs; preference pairs train with method type 'dpo'"
        )
        raise APIError(400, message, code="invalid_file_format", param=param)


def check_evaluation_file(row: File, method_type: str, param: str = "evaluation_file") -> None:
    """400 naming ``param`` unless the file holds chat examples to answer and the method answers them:
    ``invalid_file_format`` for a dpo job, ``invalid_evaluation_file`` (with line numbers) for the file."""
    if method_type == DPO_TYPE:
        message = "evaluation files score supervised (diablo) and lora jobs; a dpo job has no evaluation_file"
        raise APIError(400, message, code="invalid_file_format", param=param)
    try:
        read_eval_examples(row.storage_path)
    except DatasetError as error:
        raise APIError(400, f"File '{row.id}': {error.message}", code=error.code, param=param) from error
