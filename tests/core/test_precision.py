"""Training precision: "auto" resolution, bf16 storage with fp32 master blocks, checked on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diablo_core.errors import ConfigError
from diablo_core.methods.diablo.adapter_io import load_adapter
from diablo_core.precision import hardware as precision_module
from diablo_core.precision.hardware import (
    cpu_has_native_bf16,
    resolve_inference_dtype,
    resolve_precision,
    torch_dtype,
)
from diablo_core.training.loop import TrainingConfig, TrainingProgress, train
from tests.core.test_training import PadOnly, adapted_model, toy_examples


def native_cpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)


def test_auto_follows_the_cpus_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = precision_module._cpuinfo_flags()
    # This host's /proc/cpuinfo and torch's probe agree; AVX512-BF16 or AMX means bf16.
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", "cpu") == expected
    assert TrainingConfig().precision == "auto"
    native_cpu(monkeypatch, False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_inference_dtype("auto", "cpu") == "fp32"
    native_cpu(monkeypatch, True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_inference_dtype("auto", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"


def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\nbogomips\t: 1\n")
    assert {"amx_bf16", "avx512f"} <= precision_module._cpuinfo_flags(cpuinfo)
    assert precision_module._cpuinfo_flags(tmp_path / "absent") == set()


def test_fp16_off_cuda_and_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        TrainingConfig(precision="fp16")
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match=r"precision must be one of \['auto', 'fp32', 'bf16', 'fp16'\]"):
        TrainingConfig(precision="float16")
    with pytest.raises(ValueError, match="inference dtype"):
        resolve_inference_dtype("fp16", "cpu")
    assert TrainingConfig(precision="fp16", device="cuda").precision == "fp16"  # checked, not resolved
    assert torch_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="once resolved"):
        torch_dtype("auto")


class Progress:
    def __init__(self) -> None:
        self.seen: list[TrainingProgress] = []

    def on_progress(self, progress: TrainingProgress) -> None:
        self.seen.append(progress)


def test_bf16_stores_the_base_in_bf16_and_keeps_fp32_master_blocks(tmp_path: Path) -> None:
    model, progress = adapted_model(dropout=0.05), Progress()
    config = TrainingConfig(max_steps=2, batch_size=4, checkpoint_every=2, precision="bf16")
    result = train(model, PadOnly(), toy_examples(8), config, output_dir=tmp_path, callbacks=[progress])
    for name, parameter in model.named_parameters():
        expected = torch.float32 if name.endswith(".blocks") else torch.bfloat16
        assert parameter.dtype == expected, name
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32  # rotary angles stay exact
    optimizer = load_file(result.checkpoint_dir / "optimizer.safetensors")
    assert optimizer and all(t.dtype == torch.float32 for t in optimizer.values())
    assert result.precision == "bf16" and [p.precision for p in progress.seen] == ["bf16", "bf16"]
    assert json.loads((result.checkpoint_dir / "trainer_state.json").read_text())["precision"] == "bf16"
    # The adapter names the base as loaded (fp32), not its bf16 copy: it loads on a fresh fp32 model.
    fresh = adapted_model(dropout=0.05)
    load_adapter(fresh, result.adapter_dir)
    assert fresh.model.layers[0].self_attn.q_proj.blocks.abs().sum() > 0


def test_bf16_losses_follow_the_fp32_run(tmp_path: Path) -> None:
    losses = {}
    for precision in ("fp32", "bf16"):
        config = TrainingConfig(
            max_steps=8, batch_size=4, learning_rate=1e-2, warmup_steps=0, precision=precision
        )
        model = adapted_model(dropout=0.05)
        result = train(model, PadOnly(), toy_examples(16), config, output_dir=tmp_path / precision)
        losses[precision] = [h["loss"] for h in result.history]
        assert result.precision == precision
    assert losses["fp32"][-1] < losses["fp32"][0] - 0.1  # the run learns, so the comparison means something
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=2e-2)
    assert losses["bf16"] != losses["fp32"]  # it did compute in bf16


def test_resume_refuses_another_precision_but_accepts_auto_resolving_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = TrainingConfig(max_steps=2, batch_size=4, checkpoint_every=1, precision="fp32")
    result = train(adapted_model(), PadOnly(), toy_examples(8), first, output_dir=tmp_path / "a")
    checkpoint = tmp_path / "a" / "checkpoints" / "step-1"
    assert result.checkpoint_dir is not None
    other = TrainingConfig(max_steps=2, batch_size=4, precision="bf16")
    with pytest.raises(ConfigError) as error:
        train(
            adapted_model(),
            PadOnly(),
            toy_examples(8),
            other,
            output_dir=tmp_path / "b",
            resume_from=checkpoint,
        )
    assert error.value.code == "checkpoint_precision_mismatch"
    assert "trained in fp32" in error.value.message
    native_cpu(monkeypatch, True)  # "auto" then means bf16 here, whatever this host's CPU
    bf16_run = TrainingConfig(max_steps=2, batch_size=4, checkpoint_every=1, precision="bf16")
    train(adapted_model(), PadOnly(), toy_examples(8), bf16_run, output_dir=tmp_path / "c")
    auto = TrainingConfig(max_steps=2, batch_size=4, precision="auto")
    resumed = train(
        adapted_model(),
        PadOnly(),
        toy_examples(8),
        auto,
        output_dir=tmp_path / "d",
        resume_from=tmp_path / "c" / "checkpoints" / "step-1",
    )
    assert resumed.steps == 2 and resumed.precision == "bf16"


def test_a_checkpoint_without_a_recorded_precision_still_resumes(tmp_path: Path) -> None:
    config = TrainingConfig(max_steps=2, batch_size=4, checkpoint_every=1, precision="fp32")
    train(adapted_model(), PadOnly(), toy_examples(8), config, output_dir=tmp_path / "a")
    state_file = tmp_path / "a" / "checkpoints" / "step-1" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["precision"], state["grad_scaler"]  # as written before the setting existed
    state_file.write_text(json.dumps(state))
    resumed = train(
        adapted_model(),
        PadOnly(),
        toy_examples(8),
        TrainingConfig(max_steps=2, batch_size=4, precision="bf16"),
        output_dir=tmp_path / "b",
        resume_from=state_file.parent,
    )
    assert resumed.steps == 2
