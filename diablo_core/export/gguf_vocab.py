"""The tokenizer fields llama.cpp reads from a GGUF, for byte-level BPE ("gpt2") tokenizers such as SmolLM2's.

Tokens are listed by id with their types (normal, control for special tokens, user-defined for other added
tokens); merges, the special token ids and the chat template come from gguf-py's ``SpecialVocab``, which
reads them from the checkpoint the way llama.cpp's convert_hf_to_gguf.py does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf

from diablo_core.errors import ExportError

# llama.cpp picks its pre-tokenizer regex by name; these are the splitters it knows that we can recognise in
# tokenizer.json: GPT-2's byte-level regex alone, or preceded by single-digit splitting (SmolLM's).
_BYTE_LEVEL = ("ByteLevel", True)
_DIGITS = ("Digits", True)
_FLAG = {"ByteLevel": "use_regex", "Digits": "individual_digits"}


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for the checkpoint's pre-tokenizer.

    Raises:
        ExportError: ``export_unsupported`` for a model type other than BPE or an unrecognised splitter.
    """
    model_type = (tokenizer_json.get("model") or {}).get("type")
    if model_type != "BPE":
        raise ExportError(f"GGUF export handles byte-level BPE tokenizers, not {model_type!r}")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    shapes = [(step.get("type"), step.get(_FLAG.get(step.get("type"), ""))) for step in steps]
    if shapes == [_BYTE_LEVEL]:
        return "gpt-2"  # llama.cpp's name for GPT-2's regex ("gpt2" is the tokenizer model's name, not this)
    if shapes == [_DIGITS, _BYTE_LEVEL]:
        return "smollm"
    raise ExportError(f"GGUF export does not know the pre-tokenizer {json.dumps(pre)[:300]}")


def add_vocab(writer: gguf.GGUFWriter, directory: Path, tokenizer: Any, vocab_size: int) -> None:
    """Write the tokenizer of the checkpoint in ``directory`` (loaded as ``tokenizer``) into ``writer``."""
    tokenizer_json = json.loads((directory / "tokenizer.json").read_text())
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:  # the embedding has rows no token uses: llama.cpp's placeholder
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            special = index in decoder and decoder[index].special
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(directory, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)
