"""Held-out chat examples, how an answer is scored against one, and what an evaluation found (torch-free).

An evaluation example is a chat line: its prompt is every message before the last assistant message, its
reference that message's content. An answer scores an *exact match* when it equals the reference once both
are stripped of surrounding whitespace, and *contains* the reference when the stripped reference occurs in it.
Answers are generated greedily with a budget of the reference's length plus ``ANSWER_MARGIN_TOKENS``, so a
model that runs on cannot make an evaluation long.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from diablo_core.data.datasets import DEFAULT_LIMITS, DatasetLimits, scan_examples
from diablo_core.data.jsonl import Source
from diablo_core.errors import DatasetError

# Metric names, as training's history, events, checkpoints and the result file carry them.
EXACT_MATCH = "exact_match"
CONTAINS = "contains"
EVAL_EXACT_MATCH = f"eval_{EXACT_MATCH}"
EVAL_CONTAINS = f"eval_{CONTAINS}"
# Tokens an answer may run past its reference's length before generation stops.
ANSWER_MARGIN_TOKENS = 16
# Examples answered at each evaluation during training (the first ones of the file, the same every time).
TRAINING_EVAL_EXAMPLES = 64
SHOWN_PROBLEMS = 5
INVALID_FILE = "invalid_evaluation_file"


@dataclass(frozen=True)
class EvalExample:
    """One held-out example: the prompt's messages, the reference answer and the file line it came from."""

    messages: list[dict[str, Any]]
    reference: str
    line: int = 0


@dataclass(frozen=True)
class EvalSample:
    """One scored answer."""

    line: int
    reference: str
    answer: str
    exact_match: bool
    contains: bool


@dataclass
class EvalResult:
    """Exact-match and contains rates over ``n`` answers, and the scored answers."""

    exact_match: float
    contains: float
    n: int
    samples: list[EvalSample] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """The two rates under their metric names (``exact_match``, ``contains``)."""
        return {EXACT_MATCH: self.exact_match, CONTAINS: self.contains}

    def to_dict(self, max_samples: int | None = None) -> dict[str, Any]:
        """JSON-ready: the rates, ``n`` and the first ``max_samples`` samples (all when None)."""
        samples = self.samples if max_samples is None else self.samples[:max_samples]
        return {**self.metrics(), "n": self.n, "samples": [asdict(sample) for sample in samples]}


def score_answer(answer: str, reference: str, line: int = 0) -> EvalSample:
    """Score ``answer`` against ``reference``: exact match and containment, after stripping whitespace."""
    got, want = answer.strip(), reference.strip()
    return EvalSample(line, reference, answer, got == want, want in got)


def summarize(samples: list[EvalSample]) -> EvalResult:
    """The rates over ``samples`` (0 for none)."""
    n = len(samples)
    exact = sum(sample.exact_match for sample in samples) / n if n else 0.0
    contains = sum(sample.contains for sample in samples) / n if n else 0.0
    return EvalResult(exact, contains, n, samples)


def eval_example(example: dict[str, Any], line: int) -> EvalExample:
    """The prompt and reference of a chat example.

    Raises:
        DatasetError: ``invalid_evaluation_file`` naming ``line`` if the example has no assistant message
            with text content to compare answers with.
    """
    messages = example.get("messages")
    if not isinstance(messages, list):
        raise DatasetError(
            f'line {line}: an evaluation example is a chat example with "messages"', INVALID_FILE
        )
    last = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
        default=-1,
    )
    if last < 1 or not isinstance(messages[last].get("content"), str):
        detail = "needs messages before a last assistant message whose text content is the reference answer"
        raise DatasetError(f"line {line}: an evaluation example {detail}", INVALID_FILE)
    return EvalExample(messages[:last], messages[last]["content"], line)


def read_eval_examples(
    source: Source, max_examples: int | None = None, limits: DatasetLimits = DEFAULT_LIMITS
) -> list[EvalExample]:
    """Read a chat JSONL file of held-out examples, every problem named with its line number.

    Raises:
        DatasetError: ``invalid_evaluation_file`` for invalid lines, another format, no example, or more
            than ``max_examples`` examples (``evaluation_file_too_large``).
    """
    examples: list[EvalExample] = []
    problems: list[str] = []
    for count, (line_no, example, found) in enumerate(scan_examples(source, limits), start=1):
        if max_examples is not None and count > max_examples:
            message = f"the evaluation file has more than {max_examples} examples, the most evaluated at once"
            raise DatasetError(message, "evaluation_file_too_large")
        problems.extend(problem.message for problem in found)
        if example is not None and not found:
            try:
                examples.append(eval_example(example, line_no))
            except DatasetError as error:
                problems.append(error.message)
    if not examples and not problems:
        problems.append("line 0: the file contains no examples")
    _raise_problems(problems)
    return examples


def _raise_problems(problems: list[str]) -> None:
    if not problems:
        return
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
    raise DatasetError(f"invalid evaluation file: {shown}{more}", INVALID_FILE)


def answer_budget(reference_tokens: int) -> int:
    """The most tokens generated for an answer whose reference has ``reference_tokens`` tokens."""
    return reference_tokens + ANSWER_MARGIN_TOKENS


__all__ = [
    "ANSWER_MARGIN_TOKENS",
    "CONTAINS",
    "EVAL_CONTAINS",
    "EVAL_EXACT_MATCH",
    "EXACT_MATCH",
    "TRAINING_EVAL_EXAMPLES",
    "EvalExample",
    "EvalResult",
    "EvalSample",
    "answer_budget",
    "eval_example",
    "read_eval_examples",
    "score_answer",
    "summarize",
]
