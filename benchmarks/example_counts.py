"""What counting a training file at job creation costs (``api.services.example_lengths``).

Builds a chat file of ``--examples`` conversations (``--turns`` user/assistant pairs each) and counts it with
the default model's tokenizer: the API's ``TemplateTokenizer`` through ``validate_dataset``, counting only
(what a cold create pays), transformers' tokenizer counting alike, transformers' tokenizer with the labels
(what the worker pays when it loads the data), and a second create on the same file (the cache read).
Run: ``python -m benchmarks.example_counts --examples 2000 --turns 2``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

from transformers import AutoTokenizer

from api.services.example_lengths import count_file
from diablo_core.data.datasets import validate_dataset
from diablo_core.data.template_tokenizer import TemplateTokenizer
from diablo_core.models.loading import default_gguf_path
from registry.models import File
from registry.settings import Settings
from registry.storage import file_sha256


def chat_file(path: Path, examples: int, turns: int) -> None:
    with path.open("w") as out:
        for i in range(examples):
            messages = [{"role": "system", "content": "You answer questions about numbers briefly."}]
            for t in range(turns):
                messages.append(
                    {"role": "user", "content": f"What is {i} plus {t}? Explain in one sentence."}
                )
                messages.append({"role": "assistant", "content": f"{i} plus {t} is {i + t}, by adding them."})
            out.write(json.dumps({"messages": messages}) + "\n")


def timed(label: str, work, examples: int) -> None:
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    print(f"{label:<42} {seconds:8.3f} s  {1000 * seconds / examples:7.3f} ms/example")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=2)
    args = parser.parse_args()
    n = args.examples
    with tempfile.TemporaryDirectory() as root:
        root_path = Path(root)
        gguf = default_gguf_path()
        tokenizer_dir = root_path / "models" / "counted"
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tokenizer_dir)
        (tokenizer_dir / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
        data = root_path / "train.jsonl"
        chat_file(data, n, args.turns)
        print(f"{n} examples of {args.turns} turns, {data.stat().st_size:,} bytes")
        light = TemplateTokenizer.from_directory(tokenizer_dir)
        reference = AutoTokenizer.from_pretrained(tokenizer_dir)
        timed(
            "TemplateTokenizer, counts (API, cold create)",
            partial(validate_dataset, data, tokenizer=light),
            n,
        )
        timed("transformers, counts", partial(validate_dataset, data, tokenizer=reference), n)
        labelled = partial(validate_dataset, data, tokenizer=reference, tokenized=[])
        timed("transformers, tokens and labels (worker)", labelled, n)
        settings = Settings(data_dir=root_path)
        row = File(id="file-bench", sha256=file_sha256(data), storage_path=str(data))
        count = partial(count_file, settings, "counted", tokenizer_dir, row, "training_file")
        count()  # fills the cache
        timed("cached (a later create on the file)", count, n)


if __name__ == "__main__":
    main()
