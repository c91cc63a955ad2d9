import pytest
import torch

from diablo_core.tokenization import (
    IGNORE_INDEX,
    TokenizedExample,
    collate,
    tokenize_example,
    tokenize_examples,
)
from tests.core.tiny_tokenizer import make_tiny_tokenizer

CHAT = {
    "messages": [
        {"role": "user", "content": "Hi é"},
        {"role": "assistant", "content": "Hellö there"},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "skip me", "weight": 0},
        {"role": "user", "content": "Last"},
        {"role": "assistant", "content": "Done."},
    ]
}


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


def learned_segments(example: TokenizedExample, tokenizer) -> list[str]:
    """Decode each contiguous run of labelled positions separately."""
    segments, current = [], []
    for label in [*example.labels, IGNORE_INDEX]:
        if label != IGNORE_INDEX:
            current.append(label)
        elif current:
            segments.append(tokenizer.decode(current))
            current = []
    return segments


def test_chat_labels_cover_exactly_the_learned_assistant_turns(tokenizer):
    example = tokenize_example(CHAT, tokenizer, max_length=None)

    assert learned_segments(example, tokenizer) == ["Hellö there<|im_end|>", "Done.<|im_end|>"]
    rendered = tokenizer.apply_chat_template(CHAT["messages"], tokenize=False)
    assert example.input_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    learned = [i for i, label in enumerate(example.labels) if label != IGNORE_INDEX]
    assert all(example.labels[i] == example.input_ids[i] for i in learned)


def test_chat_with_system_message_learns_only_the_assistant(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": "5"},
    ]
    example = tokenize_example({"messages": messages}, tokenizer)

    assert learned_segments(example, tokenizer) == ["5<|im_end|>"]
    assert tokenizer.decode(example.input_ids).startswith("<|im_start|>system\nBe brief<|im_end|>")


def test_chat_without_template_falls_back_to_role_lines():
    tokenizer = make_tiny_tokenizer(chat_template=None)
    example = tokenize_example(CHAT, tokenizer, max_length=None)

    assert tokenizer.decode(example.input_ids).startswith("user: Hi é\nassistant: Hellö there<|im_end|>\n")
    assert learned_segments(example, tokenizer) == ["Hellö there<|im_end|>", "Done.<|im_end|>"]


def test_prompt_completion_learns_completion_and_eos(tokenizer):
    example = tokenize_example({"prompt": "Q: 2+3", "completion": " A: 5"}, tokenizer)

    prompt_ids = tokenizer("Q: 2+3", add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(" A: 5", add_special_tokens=False)["input_ids"]
    assert example.input_ids == [*prompt_ids, *completion_ids, tokenizer.eos_token_id]
    assert example.labels == [IGNORE_INDEX] * len(prompt_ids) + [*completion_ids, tokenizer.eos_token_id]
    assert example.num_learned_tokens == len(completion_ids) + 1


def test_truncation_keeps_labels_aligned(tokenizer):
    full = tokenize_example(CHAT, tokenizer, max_length=None)
    short = tokenize_example(CHAT, tokenizer, max_length=70)

    assert len(full.input_ids) > 70
    assert short.input_ids == full.input_ids[:70]
    assert short.labels == full.labels[:70]
    assert len(tokenize_examples([CHAT, CHAT], tokenizer, max_length=70)) == 2


def test_collate_right_pads_and_masks():
    batch = [TokenizedExample([5, 6, 7], [-100, 6, 7]), TokenizedExample([8], [8])]

    out = collate(batch, pad_token_id=0)

    assert {name: tensor.shape for name, tensor in out.items()} == {
        "input_ids": (2, 3),
        "attention_mask": (2, 3),
        "labels": (2, 3),
    }
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert out["input_ids"].dtype == torch.long
