"""The command line on a tiny Llama checkpoint saved to a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from typer.testing import CliRunner

from diablo_core.cli.main import app
from diablo_core.evaluation.answers import evaluate_answers
from diablo_core.evaluation.examples import read_eval_examples
from diablo_core.methods.diablo.adapter_io import load_adapter
from diablo_core.models.loading import load_base_model
from diablo_core.precision.hardware import resolve_precision
from diablo_core.spec.auto import auto_learning_rate
from tests.core.tiny_tokenizer import make_tiny_model, make_tiny_tokenizer

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-model")
    tokenizer = make_tiny_tokenizer()
    make_tiny_model(len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_chat(path: Path, count: int) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"{i} + 1?"}, {"role": "assistant", "content": str(i + 1)}]}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_bad(path: Path) -> Path:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({"prompt": "only a prompt"}) + "\n")
    return path


def test_validate_reports_line_numbers_and_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(write_bad(tmp_path / "bad.jsonl"))])
    assert result.exit_code == 1
    assert "bad.jsonl:2: [invalid_json]" in result.stderr
    assert "bad.jsonl:3: [missing_completion]" in result.stderr
    ok = runner.invoke(app, ["validate", str(write_chat(tmp_path / "good.jsonl", 3))])
    assert ok.exit_code == 0 and "OK, 3 chat examples" in ok.stdout


def test_train_refuses_invalid_data_before_loading_a_model(tmp_path: Path) -> None:
    bad = write_bad(tmp_path / "bad.jsonl")
    missing_model = ["--model", str(tmp_path / "no-such-model")]
    result = runner.invoke(app, ["train", *missing_model, "--data", str(bad), "--output", str(tmp_path)])
    assert result.exit_code == 1
    assert "bad.jsonl:2:" in result.stderr


def test_train_refuses_fp16_on_the_cpu(checkpoint: Path, tmp_path: Path) -> None:
    data = write_chat(tmp_path / "train.jsonl", 4)
    files = ["--model", str(checkpoint), "--data", str(data), "--output", str(tmp_path / "run")]
    result = runner.invoke(app, ["train", *files, "--precision", "fp16"])
    assert result.exit_code == 2
    assert "invalid option: precision 'fp16' needs a CUDA device" in result.stderr
    fp32 = runner.invoke(
        app, ["train", *files, "--precision", "fp32", "--max-steps", "1", "--batch-size", "2"]
    )
    assert fp32.exit_code == 0, fp32.output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["precision"] == "fp32"


def test_train_chooses_the_rate_and_warmup_as_jobs_do(checkpoint: Path, tmp_path: Path) -> None:
    data = write_chat(tmp_path / "train.jsonl", 8)
    files = ["--model", str(checkpoint), "--data", str(data), "--output", str(tmp_path / "run")]
    options = ["--num-blocks", "8", "--max-steps", "20", "--batch-size", "4"]
    trained = runner.invoke(app, ["train", *files, *options])
    assert trained.exit_code == 0, trained.output
    config = json.loads((tmp_path / "run" / "summary.json").read_text())["config"]
    hidden = AutoConfig.from_pretrained(checkpoint).hidden_size
    assert config["learning_rate"] == pytest.approx(auto_learning_rate(hidden, 8))
    assert config["warmup_steps"] == 2  # a tenth of 20 steps
    assert "learning rate" in trained.output and "(auto:" in trained.output
    for option, value in (("--lr", "fast"), ("--warmup-steps", "1.5")):
        refused = runner.invoke(app, ["train", *files, option, value])
        assert refused.exit_code == 2 and f"{option} must be 'auto' or" in refused.stderr


def test_train_generate_merge(checkpoint: Path, tmp_path: Path) -> None:
    data = write_chat(tmp_path / "train.jsonl", 8)
    run_dir = tmp_path / "run"
    common = ["--model", str(checkpoint)]
    options = ["--num-blocks", "8", "--lr", "1e-2", "--max-steps", "3", "--batch-size", "4"]
    options += ["--warmup-steps", "0"]
    files = ["--data", str(data), "--valid", str(data), "--output", str(run_dir)]
    trained = runner.invoke(app, ["train", *common, *files, *options])
    assert trained.exit_code == 0, trained.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["eval"]["tokens"] > 0
    assert (
        summary["precision"] == resolve_precision("auto", "cpu") and summary["config"]["precision"] == "auto"
    )
    adapter = run_dir / "adapter"
    more = ["--init-adapter", str(adapter), "--max-steps", "1", "--output", str(tmp_path / "more")]
    continued = runner.invoke(app, ["train", *common, "--data", str(data), *more])
    assert continued.exit_code == 0, continued.output

    generated = runner.invoke(app, ["generate", *common, "--adapter", str(adapter), "--chat", "1 + 1?"])
    assert generated.exit_code == 0, generated.output
    missing = runner.invoke(app, ["generate", *common, "--adapter", str(tmp_path / "none"), "hi"])
    assert missing.exit_code == 1 and "error [adapter_not_found]" in missing.stderr

    merged_dir = tmp_path / "merged"
    merged = runner.invoke(app, ["merge", *common, "--adapter", str(adapter), "--output", str(merged_dir)])
    assert merged.exit_code == 0, merged.output
    plain = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert not any("blocks" in name for name, _ in plain.named_parameters())
    adapted = load_base_model(str(checkpoint)).model
    load_adapter(adapted, adapter)
    ids = torch.tensor([[257, 72, 105, 258, 10]])  # (1, T)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, adapted(ids).logits, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(plain(ids).logits, load_base_model(str(checkpoint)).model(ids).logits)


def test_train_nf4_generate_and_merge_to_full_precision(checkpoint: Path, tmp_path: Path) -> None:
    data = write_chat(tmp_path / "train.jsonl", 8)
    common = ["--model", str(checkpoint)]
    options = [
        "--num-blocks",
        "8",
        "--lr",
        "1e-2",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--warmup-steps",
        "0",
    ]
    bad = runner.invoke(
        app, ["train", *common, "--data", str(data), "--output", str(tmp_path), "--quantization", "q4"]
    )
    assert bad.exit_code == 2 and "quantization must be one of" in bad.output
    files = ["--data", str(data), "--output", str(tmp_path / "run")]
    trained = runner.invoke(app, ["train", *common, *files, *options, "--quantization", "nf4"])
    assert trained.exit_code == 0, trained.output
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model"]["quantization"] == "nf4"

    refused = runner.invoke(app, ["generate", *common, "--adapter", str(adapter), "hi"])
    assert refused.exit_code == 1 and "error [adapter_quantization_mismatch]" in refused.stderr
    for extra in (["--quantization", "nf4"], ["--allow-quantization-mismatch"]):
        generated = runner.invoke(app, ["generate", *common, "--adapter", str(adapter), *extra, "hi"])
        assert generated.exit_code == 0, generated.output

    merged_dir = tmp_path / "merged"
    merged = runner.invoke(app, ["merge", *common, "--adapter", str(adapter), "--output", str(merged_dir)])
    assert merged.exit_code == 0, merged.output
    plain = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert plain.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    adapted = load_base_model(str(checkpoint), quantization="nf4").model
    load_adapter(adapted, adapter)
    ids = torch.tensor([[257, 72, 105, 258, 10]])  # (1, T)
    with torch.no_grad():  # NF4 computes with exactly the dequantized weights the merge starts from
        torch.testing.assert_close(plain(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)


def test_eval_scores_greedy_answers_and_reports_bad_lines(checkpoint: Path, tmp_path: Path) -> None:
    data = write_chat(tmp_path / "eval.jsonl", 3)
    common = ["--model", str(checkpoint), "--data-dir", str(tmp_path / "data"), "--file", str(data)]
    printed = runner.invoke(app, ["eval", *common, "--json"])
    assert printed.exit_code == 0, printed.output
    loaded = load_base_model(str(checkpoint))
    expected = evaluate_answers(loaded.model, loaded.tokenizer, read_eval_examples(data))
    assert json.loads(printed.stdout) == expected.to_dict()  # stderr has the loading bar
    assert [s["line"] for s in json.loads(printed.stdout)["samples"]] == [1, 2, 3]
    plain = runner.invoke(app, ["eval", *common, "--max-examples", "2"])
    assert plain.exit_code == 0 and "contains" in plain.output and "n 2" in plain.output
    bad = runner.invoke(app, ["eval", *common[:4], "--file", str(write_bad(tmp_path / "bad.jsonl"))])
    assert bad.exit_code == 1 and "invalid_evaluation_file" in bad.output and "line 2" in bad.output
    missing = runner.invoke(app, ["eval", *common[:4], "--file", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
