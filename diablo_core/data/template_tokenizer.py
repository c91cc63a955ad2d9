"""A model's tokenizer read from its files without transformers: token counts where torch may not load.

The API checks a job's examples against ``max_length`` when the job is created, in a process that loads no
torch or transformers. ``TemplateTokenizer`` is the part of a Hugging Face fast tokenizer that
``data.tokenization`` uses: ``tokenizers``' Rust tokenizer from ``tokenizer.json`` (the same one transformers
wraps, so the ids are the same) and the chat template from ``chat_template.jinja`` or
``tokenizer_config.json``, rendered in jinja2's immutable sandbox with the settings, filters and globals that
transformers' ``apply_chat_template`` gives it (templates are untrusted code).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
MODEL_CONFIG_FILE = "config.json"
# The special tokens transformers passes to a chat template by name.
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
# Files whose change changes what an example counts (``fingerprint``).
TOKENIZER_FILES = (TOKENIZER_FILE, CONFIG_FILE, TEMPLATE_FILE, SPECIAL_TOKENS_FILE, MODEL_CONFIG_FILE)


class TemplateTokenizer:
    """Encodes text and renders chat templates as a transformers fast tokenizer does (no offsets' options
    beyond what ``data.tokenization`` asks for)."""

    def __init__(
        self, backend: Tokenizer, chat_template: str | None, special_tokens: dict[str, str | None]
    ) -> None:
        self.backend = backend
        self.chat_template = chat_template
        self.special_tokens = special_tokens
        self.eos_token = special_tokens.get("eos_token")
        self.eos_token_id = None if self.eos_token is None else backend.token_to_id(self.eos_token)

    @classmethod
    def from_directory(cls, directory: str | Path) -> TemplateTokenizer:
        """The tokenizer saved in ``directory`` (``tokenizer.json`` and its configs).

        Raises:
            FileNotFoundError: If the directory has no ``tokenizer.json`` (a slow-only tokenizer).
            ValueError: If a config file is not valid JSON.
        """
        directory = Path(directory)
        backend = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        config = _read_json(directory / CONFIG_FILE)
        specials = _read_json(directory / SPECIAL_TOKENS_FILE)
        tokens = {name: _token_text(config.get(name, specials.get(name))) for name in SPECIAL_TOKEN_NAMES}
        return cls(backend, _chat_template(directory, config), tokens)

    def __call__(
        self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False
    ) -> dict[str, list[Any]]:
        """``{"input_ids": [...]}`` (and ``"offset_mapping"``: character spans) of ``text``."""
        encoding = self.backend.encode(text, add_special_tokens=add_special_tokens)
        result: dict[str, list[Any]] = {"input_ids": list(encoding.ids)}
        if return_offsets_mapping:
            result["offset_mapping"] = list(encoding.offsets)
        return result

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tokenize: bool = False,
        add_generation_prompt: bool = False,
    ) -> str:
        """The conversation rendered as text by the chat template (``tokenize`` must be False)."""
        if tokenize:
            raise ValueError("TemplateTokenizer renders text only: call it on the result to tokenize")
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        template = _compile(self.chat_template)
        specials = {name: value for name, value in self.special_tokens.items() if value is not None}
        return template.render(
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **specials,
        )


def context_length(directory: str | Path) -> int | None:
    """The model's context (``max_position_embeddings`` in its ``config.json``); None when it names none."""
    value = _read_json(Path(directory) / MODEL_CONFIG_FILE).get("max_position_embeddings")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def fingerprint(directory: str | Path) -> str:
    """Sizes and mtimes of the files that decide token counts: equal fingerprints, equal counts."""
    parts = []
    for name in TOKENIZER_FILES:
        path = Path(directory) / name
        if path.is_file():
            stat = path.stat()
            parts.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return ";".join(parts)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token as text: configs store a string or an added-token object ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(directory: Path, config: dict[str, Any]) -> str | None:
    """``chat_template.jinja`` (transformers 5 saves it there), else the config's (a string, or a list of
    named templates of which the ``"default"`` one is used, as transformers does)."""
    if (directory / TEMPLATE_FILE).is_file():
        return (directory / TEMPLATE_FILE).read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {item.get("name"): item.get("template") for item in template if isinstance(item, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # transformers' tojson: no HTML escaping (jinja2's own filter escapes <, >, &), and json.dumps' options.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask tag) renders its body."""

    tags = {"generation"}  # noqa: RUF012 (jinja2 reads the class attribute)

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


@lru_cache(maxsize=16)
def _compile(chat_template: str) -> jinja2.Template:
    """The template compiled in transformers' environment (compiled once per template text)."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment.from_string(chat_template)
