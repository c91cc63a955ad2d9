"""Inference bodies: chat and text completion requests, their responses and their streamed chunks.

Requests accept the OpenAI fields that change nothing in the answer (``user``, ``store``, ``metadata``,
``service_tier``, ...) and ignore them, and the penalties (checked against OpenAI's range, -2 to 2).
Fields that would change the answer and are not implemented are refused with a 400 naming them unless they
hold their neutral value, since answering them silently wrong would mislead: ``n`` other than 1, log
probabilities, ``logit_bias``, ``response_format`` other than text, ``tools``/``functions`` and a
``tool_choice`` other than "none", non-text ``modalities``; on completions ``echo``, ``best_of`` above 1 and
``suffix``. Sampling values are checked against OpenAI's ranges, so no value reaches the engine that it
cannot sample with. ``max_tokens`` is checked against ``settings.max_tokens_limit`` by the service (a
setting, not a constant).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from registry.ids import new_id

MAX_STOP_SEQUENCES = 4
# Stop strings are matched against the decoded text at every step, so their length is engine work per token:
# 256 characters covers any real stop sequence (OpenAI sets no documented bound) and caps that work.
MAX_STOP_CHARS = 256
# torch seeds a generator from a signed 64-bit integer; OpenAI documents ``seed`` as one too.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
# OpenAI's default for /v1/completions; chat completions default to the server's max_tokens_limit.
COMPLETION_DEFAULT_MAX_TOKENS = 16
CHAT_ID_PREFIX = "chatcmpl-"
COMPLETION_ID_PREFIX = "cmpl-"


def _refused_when_set(*fields: str, message: str) -> Any:
    """A field validator refusing any set (truthy) value of ``fields`` with ``message``: a feature we lack."""

    def refuse(cls: type[BaseModel], value: Any) -> Any:
        if value:
            raise ValueError(message)
        return value

    return field_validator(*fields)(classmethod(refuse))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class SamplingParams(BaseModel):
    """The fields both completion routes share."""

    model_config = ConfigDict(extra="ignore")
    # The budget when the request sets none (None: the server's max_tokens_limit).
    default_max_tokens: ClassVar[int | None] = None

    model: str = Field(min_length=1, max_length=512)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stop: list[str] | None = Field(default=None, max_length=MAX_STOP_SEQUENCES)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    # Accepted for compatibility, ignored by the engine.
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _short_stops(cls, value: list[str] | None) -> list[str] | None:
        for index, stop in enumerate(value or []):
            if len(stop) > MAX_STOP_CHARS:
                raise ValueError(f"stop[{index}] has {len(stop)} characters, more than {MAX_STOP_CHARS}")
        return value

    logit_bias: dict[str, float] | None = None

    _no_logit_bias = _refused_when_set("logit_bias", message="logit_bias is not supported")

    @field_validator("n")
    @classmethod
    def _single_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"only n=1 is supported, got {value}")
        return value

    @property
    def asked_max_tokens(self) -> int | None:
        """The token budget the request sets, if any."""
        return self.max_tokens

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_template_message(self) -> dict[str, str]:
        """``{role, content}`` for the chat template (``developer`` is the newer name of ``system``)."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatCompletionCreate(SamplingParams):
    # The OpenAPI example; "default" names the served base model on every server.
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "default", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
            ]
        }
    )

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    modalities: list[str] | None = None

    @property
    def asked_max_tokens(self) -> int | None:
        """``max_tokens``, or its newer name ``max_completion_tokens``."""
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

    _no_logprobs = _refused_when_set(
        "logprobs", "top_logprobs", message="log probabilities are not supported"
    )

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "text":
            raise ValueError(f"only {{'type': 'text'}} is supported, got type {value.get('type')!r}")
        return value

    _no_tools = _refused_when_set("tools", "functions", message="tool and function calling is not supported")

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_tool_choice(cls, value: Any) -> Any:
        if value not in (None, "none"):
            raise ValueError(f"only 'none' is supported (tool calling is not), got {value!r}")
        return value

    @field_validator("modalities")
    @classmethod
    def _text_modality(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and set(value) - {"text"}:
            raise ValueError(f"only ['text'] is supported, got {value!r}")
        return value


class CompletionCreate(SamplingParams):
    default_max_tokens: ClassVar[int | None] = COMPLETION_DEFAULT_MAX_TOKENS
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "default", "prompt": "Once upon a time", "max_tokens": 8}]}
    )

    prompt: str
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _single_prompt(cls, value: Any) -> Any:
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError(f"exactly one prompt string is supported, got a list of {len(value)}")
            return value[0]
        return value

    _no_logprobs = _refused_when_set("logprobs", message="log probabilities are not supported")

    _no_echo = _refused_when_set("echo", message="echo is not supported")

    @field_validator("best_of")
    @classmethod
    def _one_best(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError(f"only best_of=1 is supported, got {value}")
        return value

    _no_suffix = _refused_when_set("suffix", message="suffix (insertion) is not supported")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class CompletionEnvelope(BaseModel):
    """The fields every OpenAI completion object shares, in OpenAI's order; each kind narrows them."""

    id: str
    object: str
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Any]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ChatCompletion(CompletionEnvelope):
    id: str = Field(default_factory=lambda: new_id(CHAT_ID_PREFIX))
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatChunkChoice(BaseModel):
    index: int = 0
    # Only the keys that changed: {"role", "content"} first, then {"content"}, then {} with finish_reason.
    delta: dict[str, Any]
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(CompletionEnvelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    choices: list[ChatChunkChoice]


class TextChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: str | None = None


class TextCompletion(CompletionEnvelope):
    """A text completion; streamed chunks have this shape too, with ``usage`` only on the usage chunk."""

    id: str = Field(default_factory=lambda: new_id(COMPLETION_ID_PREFIX))
    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChoice]
