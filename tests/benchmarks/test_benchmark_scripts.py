"""The benchmark scripts still run: each one end to end on a tiny configuration, on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diablo_core.methods.diablo.config import DiaBloConfig
from diablo_core.models.loading import load_base_model
from tests.api.tiny_serving import CONFIGS, save_tiny_model, write_adapter
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer
from tests.process_helpers import converted_models_dir, link_models

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run_script(*args: str, timeout: float = 600) -> str:
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]  # the caller's path too (an optional --target dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_train_throughput_compares_every_dropout_variant(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    variants = "floor,diablo-fused,diablo-dropout,diablo-dropout-einsum,lora-dropout"
    stdout = run_script(
        "benchmarks/train_throughput.py", "--model", "tiny", "--rounds", "1", "--warmup", "0",
        "--memory-steps", "1", "--batch-size", "2", "--seq-len", "16", "--response-len", "8",
        "--threads", "1", "--variants", variants, "--json", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())["throughput"]
    assert set(report["timing"]["rows"]) == set(variants.split(","))
    assert set(report["memory"]) == set(variants.split(","))
    assert "diablo-dropout/lora-dropout step time" in stdout


def test_train_throughput_reports_bf16_next_to_fp32_in_one_run(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    stdout = run_script(
        "benchmarks/train_throughput.py", "--model", "tiny", "--rounds", "1", "--warmup", "0",
        "--memory-steps", "1", "--batch-size", "2", "--seq-len", "16", "--response-len", "8",
        "--threads", "1", "--variants", "floor,diablo-dropout,lora-dropout", "--precision", "both",
        "--json", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())["throughput"]
    labels = {f"{name}@{p}" for name in ("floor", "diablo-dropout", "lora-dropout") for p in ("fp32", "bf16")}
    assert set(report["timing"]["rows"]) == labels and set(report["memory"]) == labels
    ratios = report["timing"]["ratios"]
    assert {"diablo-dropout@bf16/floor@bf16", "diablo-dropout@bf16/lora-dropout@bf16"} <= set(ratios)
    assert "diablo-dropout@bf16/diablo-dropout@fp32 step time" in stdout


def test_cuda_check_passes_in_bf16_on_the_cpu() -> None:
    stdout = run_script("benchmarks/cuda_check.py", "--device", "cpu", "--tokens", "32")
    assert "dropout 0.05" in stdout and stdout.rstrip().endswith("all checks passed")


def test_layer_forward_times_both_paths_and_the_floor_with_dropout() -> None:
    stdout = run_script("benchmarks/layer_forward.py", "--tokens", "16", "--repeats", "1", "--dropout", ".05")
    assert (
        "dropout=0.05" in stdout
        and "fused/einsum" in stdout
        and "sum of one layer of each shape: floor" in stdout
    )


def test_load_test_two_project_mode_compares_b_alone_with_b_under_a_flood(tmp_path: Path) -> None:
    out = tmp_path / "flood.json"
    stdout = run_script(
        "benchmarks/load_test.py", "--model", "tiny", "--flood", "4", "--pace", "0.25", "--duration", "1",
        "--adapters", "1", "--jobs", "1", "--threads", "1", "--json", str(out),
    )  # fmt: skip
    rows = {row["kind"]: row for row in json.loads(out.read_text())["results"]}
    assert set(rows) == {"B alone", "B during A's flood", "A's flood"}
    assert rows["B alone"]["requests"] >= 2 and set(rows["B during A's flood"]["statuses"]) == {"200"}
    assert rows["A's flood"]["requests"] >= 4
    assert "B under the flood / alone: p50" in stdout


def test_train_accuracy_compares_the_methods_over_seeds_on_the_words_task(tmp_path: Path) -> None:
    out = tmp_path / "accuracy.jsonl"
    run_script(
        "benchmarks/train_accuracy.py", "--task", "words", "--seeds", "0", "1", "--steps", "1",
        "--batch-size", "2", "--limit", "2", "--precision", "bf16", "--data-root", str(tmp_path),
        "--json", str(out),
    )  # fmt: skip
    assert len((tmp_path / "words/train.jsonl").read_text().splitlines()) == 800
    *runs, summary = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(run["task"], run["seed"]) for run in runs] == [("words", 0), ("words", 1)]
    rates = {method: result["learning_rate"] for method, result in runs[0]["results"].items()}
    assert rates["lora-matched"] == 3e-4 and rates["diablo"] > 1e-3  # each method's own default
    assert set(summary["summary"]["words"]) == {"seeds", "diablo", "lora-matched", "diablo_minus_lora"}


def test_quantized_7b_trains_one_nf4_layer_of_the_7b_shape_and_decodes(tmp_path: Path) -> None:
    out = tmp_path / "q7b.json"
    run_script(
        "benchmarks/quantized_7b.py", "--layers", "1", "--steps", "2", "--seq-len", "16", "--threads", "1",
        "--json", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["quantization"] == "nf4" and report["adapted_linears"] == 5
    assert report["trainable"] == 2_195_456 and report["blocks_dtype"] == "torch.float32"  # one layer's N=64
    assert report["train_loss"][1] < report["train_loss"][0]  # the blocks learn the fixed batch
    assert report["decode_step_s"] > 0 and report["peak_rss_mb"] >= report["peak_rss_after_build_mb"]


@pytest.fixture
def tiny_adapter(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A tiny base model, a random DiaBlo adapter of it and three arithmetic questions: their paths."""
    base = save_tiny_model(tmp_path / "model")
    adapter = write_adapter(base, CONFIGS["a"], tmp_path / "adapter", seed=1)
    rows = [
        {"messages": [{"role": "system", "content": "Reply with the number only."},
                      {"role": "user", "content": f"What is {a} + {b}?"},
                      {"role": "assistant", "content": str(a + b)}]}
        for a, b in ((233, 996), (333, 364), (12, 30))
    ]  # fmt: skip
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return tmp_path / "model", adapter, test


def test_dtype_agreement_answers_in_fp32_and_bf16(
    tiny_adapter: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    model, adapter, test = tiny_adapter
    out = tmp_path / "agreement.json"
    stdout = run_script(
        "benchmarks/dtype_agreement.py", "--model", str(model), "--adapter", str(adapter),
        "--test", str(test), "--max-tokens", "4", "--threads", "1", "--json", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["questions"] == 3 and report["expected"] == ["1229", "697", "42"]
    fp32, bf16 = (report["results"][dtype]["answers"] for dtype in ("fp32", "bf16"))
    assert len(fp32) == len(bf16) == 3 and report["identical"] == sum(
        a == b for a, b in zip(fp32, bf16, strict=True)
    )
    assert f"Identical answers fp32 vs bf16: {report['identical']}/3" in stdout


def test_gguf_llama_cpp_runs_the_export_in_llama_cpp(
    tiny_adapter: tuple[Path, Path, Path], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On the default model: the tiny test tokenizer has no BPE merges, which llama.cpp's loader requires."""
    pytest.importorskip("llama_cpp", reason="the optional `llama` extra (it compiles llama.cpp)")
    _, _, test = tiny_adapter
    data_dir = link_models(tmp_path / "data", converted_models_dir(tmp_path_factory))
    base = load_base_model("default", data_dir=data_dir)
    adapter = write_adapter(base, DiaBloConfig(num_blocks=64), tmp_path / "adapter", seed=1)
    out = tmp_path / "gguf.json"
    stdout = run_script(
        "benchmarks/gguf_llama_cpp.py", "--adapter", str(adapter), "--test", str(test),
        "--data-dir", str(data_dir), "--max-tokens", "4", "--threads", "1", "--engine-dtypes", "fp32",
        "--json", str(out),
    )  # fmt: skip
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"engine fp32", "llama.cpp f16", "llama.cpp q8_0"}
    assert all(len(result["answers"]) == 3 for result in results.values())
    # The GGUF's tokenizer must split every rendered prompt exactly as the engine's tokenizer does.
    assert results["llama.cpp f16"]["same_prompt_ids"] == results["llama.cpp q8_0"]["same_prompt_ids"] == 3
    assert "| llama.cpp f16 |" in stdout


def test_eval_cost_times_batched_and_single_answers_alike(tmp_path: Path) -> None:
    model_dir = tmp_path / "tiny"
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / "eval_cost.json"
    run_script(
        "benchmarks/eval_cost.py", "--model", str(model_dir), "--examples", "5", "--batch-sizes", "1,2",
        "--data-dir", str(tmp_path / "data"), "--json", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["examples"] == 5 and set(report["batch_sizes"]) == {"1", "2"}
    assert all(run["same_answers_as_first"] and run["seconds"] > 0 for run in report["batch_sizes"].values())
