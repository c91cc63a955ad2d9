"""The README's "Fine-tune the arithmetic example", run as written against a live ``diablo serve``.

The blocks run in a fresh folder laid out like a checkout where ``make run`` is serving: ``.venv`` and
``examples`` link to this repository's, ``data/`` is the served data dir (its ``models`` linked to the default
model, converted once per test session). As in a user's terminal, what the setup block exports carries over
to the later blocks, and each way's blocks run in one shell. Only ``STEPS`` differs from a user's run: 300
steps of the real model take about 40 minutes on this CPU, so the test trains a few.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.process_helpers import (
    converted_models_dir,
    diablo_serve,
    embedded_env,
    link_models,
    wait_until_serving,
)

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SECTION = "## Fine-tune the arithmetic example"
SETUP, CURL, OPENAI, CLI = "", "With curl", "With the `openai` client", "With the `diablo` command"
EXPORT = "Getting the model out"
STEPS = "3"
STARTUP_TIMEOUT_S = 300
# Only bounds a hang: a block loads the real model, trains a few steps and chats: up to 3 minutes on a
# loaded 2-core machine.
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block of the README: the ``###`` subsection it lies in ("" before the first), its language."""

    subsection: str
    language: str
    code: str


def section_blocks(markdown: str, title: str) -> list[CodeBlock]:
    """The fenced code blocks under the ``## `` heading ``title``, in order (fences may hold ``#`` lines)."""
    blocks: list[CodeBlock] = []
    in_section, subsection, language, lines = False, "", None, []
    for line in markdown.splitlines():
        if language is not None:  # inside a fence
            if line.startswith("```"):
                if in_section:
                    blocks.append(CodeBlock(subsection, language, "\n".join(lines) + "\n"))
                language = None
            else:
                lines.append(line)
        elif line.startswith("```"):
            language, lines = line[3:].strip(), []
        elif line.startswith("## "):
            in_section, subsection = line.strip() == title, ""
        elif line.startswith("### "):
            subsection = line[4:].strip()
    return blocks


def way(blocks: list[CodeBlock], subsection: str, language: str) -> str:
    """The code of one subsection's blocks of ``language``, joined as one script."""
    codes = [block.code for block in blocks if block.subsection == subsection and block.language == language]
    assert codes, f"no {language} block under {subsection or 'the section start'!r} in {README}"
    return "\n".join(codes)


def test_readme_section_has_the_setup_and_three_ways() -> None:
    blocks = section_blocks(README.read_text(), SECTION)
    layout = [(block.subsection, block.language) for block in blocks]
    ways = [(CURL, "bash"), (CURL, "bash"), (OPENAI, "python"), (CLI, "bash")]
    assert layout == [(SETUP, "bash"), *ways, (EXPORT, "bash")]
    assert "STEPS" in way(blocks, SETUP, "bash") and "--watch" in way(blocks, CLI, "bash")


@dataclass(frozen=True)
class Checkout:
    """The folder the README's commands run in, and the API serving its ``data`` dir."""

    root: Path
    base_url: str
    serve_log: Path

    def run(self, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=self.root, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
        )

    def bash(self, code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return self.run(["bash", "-euo", "pipefail", "-c", code], env)

    def explain(self, result: subprocess.CompletedProcess[str]) -> str:
        """What a failed block printed, and the tail of the service's log."""
        serve = self.serve_log.read_text(errors="replace")[-4000:]
        return f"rc {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n--- serve\n{serve}"


@pytest.fixture(scope="session")
def converted_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted_models_dir(tmp_path_factory)


@pytest.fixture
def checkout(tmp_path: Path, converted_models: Path) -> Iterator[Checkout]:
    """``diablo serve`` (what ``make run`` runs) with the defaults, on a free port, until the test ends."""
    root = tmp_path / "checkout"
    data_dir = link_models(root / "data", converted_models)
    for name in (".venv", "examples"):
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    log = tmp_path / "serve.log"
    with diablo_serve(embedded_env(data_dir), log) as (serve, base_url):
        try:
            wait_until_serving(log, STARTUP_TIMEOUT_S)
            yield Checkout(root, base_url, log)
        finally:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(serve.pid, signal.SIGINT)
                serve.wait(timeout=60)


def run_setup(checkout: Checkout, code: str, env_file: Path) -> dict[str, str]:
    """Run the setup block; return the environment it leaves, as the next commands in that shell see it."""
    terminal = {key: value for key, value in os.environ.items() if not key.startswith("DIABLO_")}
    terminal |= {"DIABLO_BASE_URL": checkout.base_url, "STEPS": STEPS}
    result = checkout.bash(f"{code}\nenv -0 > {shlex.quote(str(env_file))}\n", terminal)
    assert result.returncode == 0, checkout.explain(result)
    entries = [entry.split("=", 1) for entry in env_file.read_text().split("\0") if "=" in entry]
    return dict(entries)


def check_curl_answer(output: str) -> None:
    """The block's output ends with the chat completion of the fine-tuned model, holding an answer."""
    completion = json.loads(output.rstrip().rpartition("\n")[2])
    assert completion.get("object") == "chat.completion", completion
    assert completion["model"].startswith("ft:") and ":arith:" in completion["model"]
    # A 3-step adapter sampled at the default temperature 1 may end its answer at once: the answer is checked
    # as an answer, not for what it says.
    choice = completion["choices"][0]
    assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")


@pytest.mark.slow
@pytest.mark.integration
def test_readme_fine_tunes_the_arithmetic_example_three_ways(checkout: Checkout, tmp_path: Path) -> None:
    blocks = section_blocks(README.read_text(), SECTION)
    env = run_setup(checkout, way(blocks, SETUP, "bash"), tmp_path / "terminal.env")
    train = checkout.root / "data" / "arithmetic" / "train.jsonl"
    assert len(train.read_text().splitlines()) == 2000
    assert env["DIABLO_API_KEY"] == (checkout.root / "data" / "dev-api-key").read_text().strip()

    curl = checkout.bash(way(blocks, CURL, "bash"), env)
    assert curl.returncode == 0, checkout.explain(curl)
    check_curl_answer(curl.stdout)

    python = checkout.run([".venv/bin/python", "-c", way(blocks, OPENAI, "python")], env)
    assert python.returncode == 0, checkout.explain(python)
    status, newline, answer = python.stdout.partition("\n")
    assert status.startswith("succeeded ft:") and ":arith:" in status, checkout.explain(python)
    assert newline and answer.endswith("\n"), checkout.explain(python)  # the answer's line (it may be empty)

    # The export block uses the CLI block's $MODEL and $JOB_ID, as a reader's terminal would.
    marker = "--- the export block ---"
    cli = checkout.bash(f"{way(blocks, CLI, 'bash')}\necho '{marker}'\n{way(blocks, EXPORT, 'bash')}", env)
    assert cli.returncode == 0, checkout.explain(cli)
    for exported in ("arith-adapter/adapter_model.safetensors", "arith-hf/config.json", "arith.gguf"):
        assert (checkout.root / exported).is_file(), exported
    chat_part = cli.stdout.partition(marker)[0]
    table, _, answer = chat_part.rpartition(":arith:")  # `models list`, then the chat's answer
    assert table.count(":arith:") == 2, checkout.explain(cli)  # three adapters: curl's, Python's, this one
    # after the table's last row, the chat's answer line (empty if the model ended its answer at once)
    assert answer.partition("\n")[2].endswith("\n"), checkout.explain(cli)
