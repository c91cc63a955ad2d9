import random
import time

import pytest
import torch
from jinja2 import TemplateError
from transformers import AutoTokenizer

from diablo_core.data.tokenization import (
    IGNORE_INDEX,
    TokenizedExample,
    render_messages,
    tokenize_example,
    tokenize_examples,
)
from diablo_core.training.loss import collate
from registry.base_models import DEFAULT_CHECKPOINT_DIR
from tests.core.tiny_tokenizer import CHATML_TEMPLATE, learned_segments, make_tiny_tokenizer
from tests.process_helpers import converted_models_dir

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


def reference_tokenize(example: dict, tokenizer) -> TokenizedExample:
    """The labelling as it was before it was made linear: every learned turn renders its prefixes."""
    messages = example["messages"]
    text = render_messages(messages, tokenizer, add_generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        before = render_messages(messages[:index], tokenizer, add_generation_prompt=True) if index else ""
        through = render_messages(messages[: index + 1], tokenizer, add_generation_prompt=False)
        if not through.startswith(before):
            before = through[: max(through.rfind(message["content"]), 0)]
        if not text.startswith(through):
            raise ValueError("the chat template does not render conversations incrementally")
        spans.append((len(before), len(through.rstrip())))
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    labels = [
        ids[i] if any(lo <= start < hi for lo, hi in spans) else IGNORE_INDEX
        for i, (start, _end) in enumerate(encoding["offset_mapping"])
    ]
    return TokenizedExample(ids, labels)


def conversation(turns: int, seed: int = 0) -> list[dict]:
    """``turns`` messages mixing every shape a learned span can have (deterministic for a seed)."""
    rng = random.Random(seed)
    contents = ["", " ", "ok\n", "Hellö é\n\n", "<|im_start|>assistant\n", "a  b\t", "x" * 40, "2 + 3 = 5"]
    messages = [{"role": "system", "content": "Be brief"}] if seed % 2 else []
    while len(messages) < turns:
        messages.append({"role": "user", "content": rng.choice(contents)})
        reply = {"role": "assistant", "content": rng.choice(contents)}
        if rng.random() < 0.3:
            reply["weight"] = rng.choice([0, 1])
        messages.append(reply)
        if rng.random() < 0.1:
            messages.append({"role": "system", "content": rng.choice(contents)})
    return messages[:turns]


CASES = [
    CHAT["messages"],
    [{"role": "assistant", "content": "first"}, {"role": "user", "content": "then"}],
    *[conversation(turns, seed) for seed, turns in enumerate([2, 3, 7, 20, 41, 120])],
]
NUMBERED = "{% for m in messages %}{{ loop.index }}. {{ m.role }}: {{ m.content }}<|im_end|>\n{% endfor %}"
TEMPLATES = {
    "chatml": CHATML_TEMPLATE,
    "no_template": None,
    # Not concatenative (turn numbers): the pieces do not join into the full render.
    "numbered": NUMBERED
    + "{% if add_generation_prompt %}{{ (messages | length) + 1 }}. assistant: {% endif %}",
    # The generation prompt is not how an assistant turn starts: the content is located instead.
    "other_prompt": NUMBERED.replace("m.role", "m.role | upper")
    + "{% if add_generation_prompt %}A:{% endif %}",
}


@pytest.mark.parametrize("template", TEMPLATES, ids=list(TEMPLATES))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_labels_are_those_of_rendering_every_prefix(template: str, case: int) -> None:
    tokenizer = make_tiny_tokenizer(chat_template=TEMPLATES[template])
    example = {"messages": CASES[case]}

    assert tokenize_example(example, tokenizer, max_length=None) == reference_tokenize(example, tokenizer)


def test_a_template_refusing_lone_messages_falls_back_and_still_raises_its_own_errors() -> None:
    alternating = (
        "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
        "[{{ m.role }}] {{ m.content }}</s>{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    tokenizer = make_tiny_tokenizer(chat_template=alternating)
    example = {"messages": [m for m in CHAT["messages"] if m["content"] != "Again?" and m.get("weight", 1)]}

    assert tokenize_example(example, tokenizer, None) == reference_tokenize(example, tokenizer)
    with pytest.raises(TemplateError, match="roles must alternate"):
        tokenize_example({"messages": example["messages"][1:]}, tokenizer)


class CountingTokenizer:
    """A tokenizer that counts the characters its chat template renders."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer, self.rendered = tokenizer, 0

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self._tokenizer(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs) -> str:
        text = self._tokenizer.apply_chat_template(*args, **kwargs)
        self.rendered += len(text)
        return text


def test_rendering_work_per_turn_is_flat_across_sizes(tokenizer) -> None:
    # Characters rendered per turn at 8x the turns: rendering each learned turn's prefixes made it about 8.
    per_turn = []
    for turns in (64, 512):
        counting = CountingTokenizer(tokenizer)
        tokenize_example({"messages": conversation(turns)}, counting, max_length=None)
        per_turn.append(counting.rendered / turns)
    print(f"characters rendered per turn: {per_turn[0]:.0f} at 64 turns, {per_turn[1]:.0f} at 512 turns")
    assert per_turn[1] / per_turn[0] < 3


def test_tokenization_time_per_turn_is_flat_across_sizes(tokenizer) -> None:
    # CPU time per turn at 8x the turns (best of three), a ratio rather than a wall-clock limit: it stays near
    # 1 when the work is linear, and labelling each token against every span made it about 8.
    def seconds_per_turn(turns: int) -> float:
        example = {"messages": conversation(turns)}
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            tokenize_example(example, tokenizer, max_length=None)
            best = min(best, time.process_time() - started)
        return best / turns

    small, large = seconds_per_turn(100), seconds_per_turn(800)
    print(f"tokenization: {small * 1e6:.0f} us/turn at 100 turns, {large * 1e6:.0f} us/turn at 800 turns")
    assert large / small < 3


@pytest.fixture(scope="module")
def default_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """The real default model's tokenizer (the model converted once per test session)."""
    return AutoTokenizer.from_pretrained(converted_models_dir(tmp_path_factory) / DEFAULT_CHECKPOINT_DIR)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CASES)))
def test_default_tokenizer_labels_are_those_of_rendering_every_prefix(default_tokenizer, case: int) -> None:
    example = {"messages": CASES[case]}

    assert tokenize_example(example, default_tokenizer, None) == reference_tokenize(
        example, default_tokenizer
    )
