"""``diablo chat MODEL``: talk to a base or fine-tuned model, the answer streamed as it is generated.

Lines are read from stdin (a terminal or a pipe); each one is sent with the conversation so far to
``POST /v1/chat/completions`` with ``stream: true``. ``--message`` asks one question and exits.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from diablo_cli.client import DEFAULT_BASE_URL, DiabloClient
from diablo_cli.connection import ApiKeyOption, BaseUrlOption, connect, stderr_console

EXIT_COMMANDS = frozenset({"/exit", "/quit"})
EXIT_INTERRUPTED = 130


def ask(client: DiabloClient, request: dict[str, Any], messages: list[dict[str, str]], text: str) -> str:
    """Send ``text`` after ``messages``, print the answer as it streams in, and add both to ``messages``."""
    messages.append({"role": "user", "content": text})
    pieces = []
    try:
        for piece in client.stream_chat({**request, "messages": messages}):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
    except Exception:
        # A broken-off answer still ends its line, so the error starts on a line of its own.
        sys.stdout.write("\n" if pieces else "")
        raise
    sys.stdout.write("\n")
    sys.stdout.flush()
    answer = "".join(pieces)
    messages.append({"role": "assistant", "content": answer})
    return answer


def read_line(interactive: bool) -> str | None:
    """The next line of stdin without its newline, or None at the end of input."""
    if interactive:
        try:
            return input("> ")
        except EOFError:
            return None
    line = sys.stdin.readline()
    return line.rstrip("\n") if line else None


def converse(client: DiabloClient, request: dict[str, Any], messages: list[dict[str, str]]) -> None:
    """Answer each line of stdin until it ends or a line says /exit."""
    interactive = sys.stdin.isatty()
    if interactive:
        stderr_console().print(f"Chatting with {request['model']}: /exit or Ctrl-D ends.", markup=False)
    while (line := read_line(interactive)) is not None:
        text = line.strip()
        if text in EXIT_COMMANDS:
            return
        if text:
            ask(client, request, messages, text)


def chat(
    model: Annotated[str, typer.Argument(help="A base model or a fine-tuned model (ft:…).")],
    system: Annotated[str | None, typer.Option(help="A system message to start the conversation.")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="The most tokens per answer.")] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, max=2.0, help="Sampling temperature.")] = None,
    message: Annotated[str | None, typer.Option(help="Ask one question, print the answer, exit.")] = None,
    base_url: BaseUrlOption = DEFAULT_BASE_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Chat with a model; the answers stream in as they are generated."""
    request: dict[str, Any] = {"model": model}
    sampling = {"max_tokens": max_tokens, "temperature": temperature}
    request |= {key: value for key, value in sampling.items() if value is not None}
    messages = [{"role": "system", "content": system}] if system else []
    try:
        with connect(base_url, api_key) as client:
            if message is not None:
                ask(client, request, messages, message)
            else:
                converse(client, request, messages)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None
