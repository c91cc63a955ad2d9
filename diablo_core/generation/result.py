"""What a finished completion is: torch-free, so the API can name it without loading the decoding stack."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerationResult:
    """A finished completion: its text, token counts and why it ended (``"stop"`` or ``"length"``)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
