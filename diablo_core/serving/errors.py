"""Errors the inference engine raises at ``submit`` or publishes into a request's handle."""

from __future__ import annotations

from diablo_core.errors import DiaBloError


class EngineClosedError(DiaBloError):
    """The engine is closed (or closing) and takes no more requests."""

    default_code = "engine_closed"


class ContextLengthError(DiaBloError):
    """The prompt plus ``max_tokens`` exceed the model's context window (``context_length_exceeded``).

    Attributes:
        prompt_tokens: Tokens of the prompt.
        max_tokens: Tokens asked for the completion.
        context_length: The most tokens the model attends to.
    """

    default_code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, max_tokens: int, context_length: int) -> None:
        self.prompt_tokens, self.max_tokens, self.context_length = prompt_tokens, max_tokens, context_length
        super().__init__(
            f"This model's maximum context length is {context_length} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion."
        )


class EngineBusyError(DiaBloError):
    """The waiting queue is full: ``engine_overloaded`` or ``tenant_queue_full`` (one tenant's share).

    Attributes:
        retry_after_s: When a retry may find room, estimated from the recent turnover of rows (at least 1 s).
    """

    default_code = "engine_overloaded"

    def __init__(self, message: str, code: str, retry_after_s: float) -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s
