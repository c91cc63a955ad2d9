"""Command line: ``python -m diablo_core train|generate|eval|merge|validate``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from diablo_core.cli.auto_settings import fit_auto_settings, parse_auto
from diablo_core.cli.progress import RichProgress
from diablo_core.data.datasets import read_examples, validate_dataset
from diablo_core.data.tokenization import tokenize_examples
from diablo_core.errors import DiaBloError
from diablo_core.evaluation.answers import DEFAULT_BATCH_SIZE, evaluate_answers
from diablo_core.evaluation.examples import read_eval_examples
from diablo_core.generation.decoding import generate as generate_text
from diablo_core.methods.diablo.adapter_io import load_adapter, read_adapter_config
from diablo_core.methods.diablo.config import DEFAULT_TARGET_MODULES, DiaBloConfig
from diablo_core.methods.diablo.model import apply_diablo, trainable_parameters, unload_diablo
from diablo_core.models.loading import load_base_model
from diablo_core.models.quantization import check_quantization, dequantize_model
from diablo_core.precision.hardware import resolve_precision
from diablo_core.spec.training import STRATEGIES
from diablo_core.training.distributed import World, join_world, leave_world
from diablo_core.training.loop import TrainingConfig, TrainingResult, train

app = typer.Typer(
    help="DiaBlo fine-tuning: train, try and export diagonal-block adapters.", no_args_is_help=True
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

ModelOpt = Annotated[str, typer.Option(help='"default", a local checkpoint directory or a hub id.')]
DataDirOpt = Annotated[Path, typer.Option(help="Where the default model is converted and cached.")]
DeviceOpt = Annotated[str, typer.Option(help="Torch device: cpu, cuda, cuda:1...")]
QuantizationOpt = Annotated[
    str | None, typer.Option(help="Quantize the base's linear layers: nf4 or int8 (bitsandbytes).")
]


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turns a DiaBloError (bad model name, adapter mismatch...) into a one-line message and exit code 1."""
    try:
        yield
    except DiaBloError as error:
        err_console.print(f"error [{error.code}]: {error.message}", markup=False)
        raise typer.Exit(1) from error


def _check_dataset(path: Path, label: str) -> None:
    """Prints every problem of a JSONL file with its line number and exits 1 when there is any."""
    if not path.is_file():
        err_console.print(f"{label} file {path} does not exist")
        raise typer.Exit(1)
    report = validate_dataset(path)
    if report.ok:
        return
    for problem in report.problems:
        err_console.print(
            f"{path}:{problem.line}: [{problem.code}] {problem.message}", markup=False, soft_wrap=True
        )
    if report.num_problems > len(report.problems):
        err_console.print(f"... and {report.num_problems - len(report.problems)} more problems")
    raise typer.Exit(1)


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="JSONL dataset to check.")]) -> None:
    """Check a JSONL dataset; print line-numbered problems and exit 1 if there are any."""
    _check_dataset(file, "dataset")
    report = validate_dataset(file)
    console.print(f"{file}: OK, {report.num_examples} {report.format} examples")


@app.command(name="train")
def train_command(
    data: Annotated[Path, typer.Option(help="Training JSONL (chat or prompt/completion).")],
    output: Annotated[Path, typer.Option(help="Run directory: checkpoints/ and adapter/ go here.")],
    model: ModelOpt = "default",
    valid: Annotated[Path | None, typer.Option(help="Validation JSONL.")] = None,
    num_blocks: Annotated[int, typer.Option(help="DiaBlo N (blocks per layer).")] = 64,
    targets: Annotated[str, typer.Option(help="Comma-separated target module names.")] = ",".join(
        DEFAULT_TARGET_MODULES
    ),
    dropout: float = 0.05,
    lr: Annotated[
        str, typer.Option(help="Learning rate, or auto: the job API's rule for the model's block size.")
    ] = "auto",
    epochs: int = 1,
    max_steps: Annotated[int | None, typer.Option(help="Steps to train (replaces --epochs).")] = None,
    batch_size: int = 16,
    micro_batch_size: int | None = None,
    max_length: int = 256,
    warmup_steps: Annotated[
        str, typer.Option(help="Warm-up steps, or auto: a tenth of the run, at most the paper's 100.")
    ] = "auto",
    scheduler: str = "linear",
    seed: int = 0,
    eval_every: int | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int | None = None,
    gradient_checkpointing: bool = False,
    resume_from: Annotated[Path | None, typer.Option(help="Checkpoint directory to continue from.")] = None,
    init_adapter: Annotated[
        Path | None, typer.Option(help="Start from this adapter's blocks (its N, targets and dropout apply).")
    ] = None,
    device: DeviceOpt = "cpu",
    precision: Annotated[
        str, typer.Option(help="auto (bf16 where the device computes it natively), fp32, bf16, fp16 (CUDA).")
    ] = "auto",
    strategy: Annotated[
        str,
        typer.Option(help=f"{'|'.join(STRATEGIES)}: under torchrun, ddp replicates, fsdp shards the model."),
    ] = "auto",
    quantization: QuantizationOpt = None,
    data_dir: DataDirOpt = Path("data"),
) -> None:
    """Train a DiaBlo adapter into OUTPUT/adapter (under torchrun: one run over all the ranks)."""
    _check_dataset(data, "training")
    if valid is not None:
        _check_dataset(valid, "validation")
    try:
        learning_rate = parse_auto(lr, "--lr", integer=False)
        warmup = parse_auto(warmup_steps, "--warmup-steps", integer=True)
        given_rate = TrainingConfig.learning_rate if learning_rate is None else learning_rate
        config = TrainingConfig(
            learning_rate=given_rate, n_epochs=epochs, max_steps=max_steps, batch_size=batch_size,
            micro_batch_size=micro_batch_size, max_length=max_length, warmup_steps=warmup or 0,
            scheduler=scheduler, seed=seed, gradient_checkpointing=gradient_checkpointing,
            eval_every=eval_every, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
            device=device, precision=precision, strategy=strategy,
        )  # fmt: skip
        diablo = DiaBloConfig(
            num_blocks=num_blocks, target_modules=tuple(targets.split(",")), dropout=dropout
        )
        check_quantization(quantization)
    except ValueError as error:
        err_console.print(f"invalid option: {error}")
        raise typer.Exit(2) from error
    world = join_world(strategy, device)  # under torchrun: before loading, to load on this rank's device
    try:
        _train_in_world(
            world,
            model,
            data_dir,
            diablo,
            init_adapter,
            data,
            valid,
            config,
            output,
            resume_from,
            quantization,
            learning_rate=learning_rate,
            warmup_steps=warmup,
        )
    finally:
        leave_world(world)


def _train_in_world(
    world: World | None,
    model: str,
    data_dir: Path,
    diablo: DiaBloConfig,
    init_adapter: Path | None,
    data: Path,
    valid: Path | None,
    config: TrainingConfig,
    output: Path,
    resume_from: Path | None,
    quantization: str | None,
    *,
    learning_rate: float | None,
    warmup_steps: int | None,
) -> None:
    """Loads, trains and summarises; on ranks other than 0 of a launch it prints nothing but errors.
    ``learning_rate`` and ``warmup_steps`` replace ``config``'s, or (None) are chosen as "auto"."""
    console.quiet = world is not None and not world.is_main
    device = world.device if world else config.device
    with _user_errors():
        loaded = load_base_model(model, data_dir=data_dir, device=device, quantization=quantization)
        if init_adapter is not None:
            diablo = load_adapter(loaded.model, init_adapter)
        else:
            apply_diablo(loaded.model, diablo)
        console.print(
            f"{loaded.identity.name}: {trainable_parameters(loaded.model):,} trainable parameters, "
            f"precision {resolve_precision(config.precision, device)}"
        )
        train_set = tokenize_examples(read_examples(data), loaded.tokenizer, config.max_length)
        valid_set = (
            tokenize_examples(read_examples(valid), loaded.tokenizer, config.max_length) if valid else None
        )
        config, chosen = fit_auto_settings(
            config, learning_rate=learning_rate, warmup_steps=warmup_steps,
            hidden_size=loaded.model.config.hidden_size, num_blocks=diablo.num_blocks,
            num_examples=len(train_set),
        )  # fmt: skip
        for line in chosen:
            console.print(line)
        with RichProgress(console) as progress:
            result = train(
                loaded.model, loaded.tokenizer, train_set, config,
                valid_examples=valid_set, output_dir=output, callbacks=[progress], resume_from=resume_from,
            )  # fmt: skip
    if world is None or world.is_main:
        _write_summary(output, result, config)


def _write_summary(output: Path, result: TrainingResult, config: TrainingConfig) -> None:
    """Prints the run's outcome and keeps it, with the config, in OUTPUT/summary.json."""
    summary = {
        "steps": result.steps,
        "stopped": result.stopped,
        "train_loss": result.train_loss,
        "eval": result.eval_metrics,
        "trained_tokens": result.trained_tokens,
        "train_seconds": round(result.train_seconds, 2),
        "tokens_per_second": round(result.trained_tokens / max(result.train_seconds, 1e-9), 1),
        "adapter": str(result.adapter_dir),
        "precision": result.precision,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.json").write_text(json.dumps({**summary, "config": config.to_dict()}, indent=2))
    console.print_json(json.dumps(summary))


@app.command(name="generate")
def generate_command(
    prompt: Annotated[str, typer.Argument(help="Prompt text (a user message with --chat).")],
    model: ModelOpt = "default",
    adapter: Annotated[Path | None, typer.Option(help="Adapter directory to apply.")] = None,
    chat: Annotated[
        bool, typer.Option(help="Send PROMPT as a user message through the chat template.")
    ] = False,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int | None = None,
    device: DeviceOpt = "cpu",
    quantization: QuantizationOpt = None,
    allow_quantization_mismatch: Annotated[
        bool, typer.Option(help="Apply an adapter trained on another quantization of the same base.")
    ] = False,
    data_dir: DataDirOpt = Path("data"),
) -> None:
    """Generate a completion from the base model, or with an adapter."""
    with _user_errors():
        loaded = load_base_model(model, data_dir=data_dir, device=device, quantization=quantization)
        if adapter is not None:
            load_adapter(loaded.model, adapter, allow_quantization_mismatch=allow_quantization_mismatch)
    source = {"messages": [{"role": "user", "content": prompt}]} if chat else {"prompt": prompt}
    result = generate_text(
        loaded.model,
        loaded.tokenizer,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        **source,
    )
    console.print(result.text, markup=False, highlight=False)


@app.command(name="eval")
def eval_command(
    file: Annotated[
        Path, typer.Option(help="Held-out chat JSONL; each line's last assistant message is the reference.")
    ],
    model: ModelOpt = "default",
    adapter: Annotated[Path | None, typer.Option(help="Adapter directory to apply.")] = None,
    max_examples: Annotated[int | None, typer.Option(help="Answer at most this many examples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts decoded together.")] = DEFAULT_BATCH_SIZE,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result and every answer as JSON.")
    ] = False,
    device: DeviceOpt = "cpu",
    quantization: QuantizationOpt = None,
    data_dir: DataDirOpt = Path("data"),
) -> None:
    """Score greedy answers to held-out chat examples: exact match and contains (whitespace stripped)."""
    if not file.is_file():
        err_console.print(f"evaluation file {file} does not exist")
        raise typer.Exit(1)
    with _user_errors():
        examples = read_eval_examples(file)
        loaded = load_base_model(model, data_dir=data_dir, device=device, quantization=quantization)
        if adapter is not None:
            load_adapter(loaded.model, adapter)
        result = evaluate_answers(
            loaded.model, loaded.tokenizer, examples, max_examples=max_examples, batch_size=batch_size
        )
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        console.print(f"exact match {result.exact_match:.3f}, contains {result.contains:.3f}, n {result.n}")


@app.command()
def merge(
    adapter: Annotated[Path, typer.Option(help="Adapter directory.")],
    output: Annotated[Path, typer.Option(help="Directory for the merged checkpoint.")],
    model: ModelOpt = "default",
    data_dir: DataDirOpt = Path("data"),
) -> None:
    """Merge an adapter into its base model and save a plain checkpoint (save_pretrained).

    An adapter trained on a quantized base is merged into that base dequantized (the weights it was
    trained against), and the checkpoint is written in full precision.
    """
    with _user_errors():
        quantization = read_adapter_config(adapter)["base_model"].get("quantization")
        loaded = load_base_model(model, data_dir=data_dir, quantization=quantization)
        load_adapter(loaded.model, adapter)
    dequantize_model(loaded.model)
    merged = unload_diablo(loaded.model, merge=True)
    merged.save_pretrained(output)
    loaded.tokenizer.save_pretrained(output)
    console.print(f"merged checkpoint written to {output}")
