"""Distributed training with gloo on CPU: two ranks (torchrun) give the adapter of one process.

Each launch starts ``torchrun --standalone --nproc-per-node 2 -m tests.core.distributed_run`` (a free port of
its own), trains the tiny model with the reference config (global batch 3, micro-batches of 2, dropout 0) and
compares with the same run in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diablo_core.training.distributed import World, join_world, label_free, shard
from diablo_core.training.loop import TrainingConfig
from tests.core.distributed_run import run_training
from tests.core.test_cli import write_chat
from tests.core.test_training import toy_examples
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5


def launch(output: Path, strategy: str, resume_from: Path | None = None, ranks: int = 2) -> dict:
    """Runs ``tests.core.distributed_run`` under torchrun and returns rank 0's result.json."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    command += ["-m", "tests.core.distributed_run", str(output), strategy]
    command += ["--resume-from", str(resume_from)] if resume_from else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    errors = [line for line in done.stderr.splitlines() if "rror" in line or "abort" in line.lower()]
    assert done.returncode == 0, "\n".join(errors[:40]) + done.stderr[-2000:]
    return json.loads((output / "result.json").read_text())


def adapter_of(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "adapter_model.safetensors")


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert any(value.abs().max() > 1e-3 for value in a.values()), "the adapter did not train"
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=TOLERANCE, msg=key)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one-process reference run (its adapter, checkpoints and result.json)."""
    output = tmp_path_factory.mktemp("single")
    run_training(output, "none")
    return output


def test_shards_partition_each_batch_and_pad_to_equal_length() -> None:
    batch = toy_examples(5)
    worlds = [World(rank, 2, "ddp", "cpu", owns_group=False) for rank in range(2)]
    shares = [shard(batch, world) for world in worlds]
    assert sorted(id(e) for share in shares for e in share) == sorted(id(e) for e in batch)
    filler = label_free(batch[0])
    assert [len(shard(batch, world, filler)) for world in worlds] == [3, 3]
    assert filler.num_learned_tokens == 0 and filler.input_ids == batch[0].input_ids
    assert shard(batch[:1], worlds[1], filler) == [filler]  # an empty shard still runs one pass


def test_single_process_has_no_world_and_strategy_is_validated() -> None:
    assert join_world("auto", "cpu") is None and join_world("fsdp", "cpu") is None
    with pytest.raises(ValueError, match="strategy must be one of"):
        TrainingConfig(strategy="zero3")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_train_the_adapter_of_one_process(strategy: str, single: Path, tmp_path: Path) -> None:
    result = launch(tmp_path, strategy)
    reference = json.loads((single / "result.json").read_text())
    assert_close(adapter_of(single / "adapter"), adapter_of(tmp_path / "adapter"))
    assert result["steps"] == reference["steps"] == 6
    assert result["trained_tokens"] == reference["trained_tokens"]
    assert result["loss"] == pytest.approx(reference["loss"], abs=TOLERANCE)
    for name in ("loss", "accuracy", "tokens"):  # evaluation reduced over both ranks' shards
        assert result["eval"][name] == pytest.approx(reference["eval"][name], abs=TOLERANCE)
    # Rank 0 alone writes: one directory per checkpoint, no staging leftovers.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-3", "step-6"]
    # A checkpoint of two ranks resumes in one process and ends at the same adapter.
    resumed = tmp_path / "resumed"
    run_training(resumed, "none", resume_from=tmp_path / "checkpoints" / "step-3")
    assert_close(adapter_of(single / "adapter"), adapter_of(resumed / "adapter"))


@pytest.mark.slow
def test_one_process_checkpoint_resumes_under_two_sharded_ranks(single: Path, tmp_path: Path) -> None:
    launch(tmp_path, "fsdp", resume_from=single / "checkpoints" / "step-3")
    assert_close(adapter_of(single / "adapter"), adapter_of(tmp_path / "adapter"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_cli_under_torchrun_writes_the_adapter_of_one_process(strategy: str, tmp_path: Path) -> None:
    """The issue's check: ``torchrun --standalone --nproc-per-node 2 -m diablo_core train --strategy``."""
    model = tmp_path / "model"
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = write_chat(tmp_path / "train.jsonl", 10)
    options = ["--model", str(model), "--data", str(data), "--valid", str(data), "--num-blocks", "8"]
    options += [
        "--dropout",
        "0",
        "--lr",
        "1e-2",
        "--max-steps",
        "4",
        "--batch-size",
        "3",
        "--warmup-steps",
        "0",
        "--precision",
        "fp32",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "diablo_core", "train", *options, "--output", str(tmp_path / "one")]
    subprocess.run(one, cwd=ROOT, env=env, check=True, capture_output=True, timeout=240)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command = [*launcher, "-m", "diablo_core", "train", *options, "--output", str(tmp_path / "two")]
    done = subprocess.run(
        [*command, "--strategy", strategy], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trainable parameters") == 1  # rank 1 prints nothing
    assert_close(adapter_of(tmp_path / "one" / "adapter"), adapter_of(tmp_path / "two" / "adapter"))
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("one", "two")]
    assert summaries[0]["eval"] == pytest.approx(summaries[1]["eval"], abs=TOLERANCE)
