"""Exports of a tiny Llama with a DiaBlo adapter: the merged checkpoint answers in plain transformers as the
adapted model does, the GGUF holds the merged weights (f16, q8_0) and llama.cpp's metadata, one build."""

from __future__ import annotations

import tarfile
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from diablo_core.errors import ExportError
from diablo_core.export import build
from diablo_core.export.build import ExportSource, export_model
from diablo_core.export.formats import ExportRequest
from diablo_core.export.gguf_file import permute_rope, unpermute_rope, write_gguf
from diablo_core.generation.decoding import build_prompt_ids, generate
from diablo_core.methods.diablo.adapter_io import load_adapter
from tests.api.tiny_serving import CONFIGS, save_tiny_model, sha256_of, unpack, write_adapter
from tests.core.tiny_tokenizer import make_tiny_tokenizer

MESSAGES = [{"role": "user", "content": "What is 12 + 30?"}]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> ExportSource:
    root = tmp_path_factory.mktemp("export")
    base = save_tiny_model(root / "model")
    adapter = write_adapter(base, CONFIGS["b"], root / "adapter", seed=3)
    return ExportSource(adapter, sha256_of(adapter), str(root / "model"), root / "data")


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def merged_dir(source: ExportSource, exports: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    archive = export_model(source, ExportRequest("merged"), exports)
    return unpack(archive, tmp_path_factory.mktemp("merged"))


def test_adapter_archive_holds_exactly_the_adapter_files(source, exports, tmp_path) -> None:
    folder = unpack(export_model(source, ExportRequest("adapter"), exports), tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert sha256_of(folder) == source.adapter_sha256


def test_merged_checkpoint_answers_as_the_adapted_model(source, merged_dir) -> None:
    adapted = save_tiny_model(Path(source.base_model))  # reloads the saved base
    load_adapter(adapted.model, source.adapter_dir)  # unmerged: the service's path
    expected = generate(adapted.model, adapted.tokenizer, messages=MESSAGES, max_new_tokens=24)

    model = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template == adapted.tokenizer.chat_template
    prompt = torch.tensor([build_prompt_ids(tokenizer, messages=MESSAGES)])
    output = model.generate(prompt, max_new_tokens=24, do_sample=False)[0, prompt.shape[1] :].tolist()
    eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
              else [model.generation_config.eos_token_id])  # fmt: skip
    cut = next((i for i, token in enumerate(output) if token in eos), len(output))
    assert tokenizer.decode(output[:cut]) == expected.text
    assert expected.completion_tokens >= 1
    card = (merged_dir / "README.md").read_text()
    assert source.adapter_sha256 in card and "base_model:" in card


def test_gguf_f16_holds_the_merged_weights_and_llama_metadata(source, exports, merged_dir) -> None:
    path = export_model(source, ExportRequest("gguf"), exports)
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.tokens"][:3] == [tokenizer.convert_ids_to_tokens(i) for i in range(3)]
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template
    assert fields["llama.attention.head_count_kv"] == 2 and fields["llama.rope.dimension_count"] == 16
    merged = load_file(merged_dir / "model.safetensors")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    by_gguf = {names.get_name(key, try_suffixes=(".weight",)): key for key in merged}
    assert sorted(t.name for t in reader.tensors) == sorted(by_gguf)
    for tensor in reader.tensors:
        source_name = by_gguf[tensor.name]
        expected = merged[source_name].numpy()
        stored = np.array(tensor.data).reshape(expected.shape)
        heads = {"q_proj": 4, "k_proj": 2}.get(source_name.split(".")[-2])
        if heads:
            stored = unpermute_rope(stored, heads)
        dtype = np.float32 if expected.ndim == 1 else np.float16
        assert stored.dtype == dtype, tensor.name
        np.testing.assert_array_equal(stored, expected.astype(dtype), err_msg=tensor.name)


def test_gguf_q8_0_is_within_one_quantization_step(source, exports, merged_dir) -> None:
    reader = gguf.GGUFReader(export_model(source, ExportRequest("gguf", "q8_0"), exports))
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    merged = load_file(merged_dir / "model.safetensors")
    q = next(t for t in reader.tensors if t.name == "blk.1.attn_q.weight")
    assert q.tensor_type == gguf.GGMLQuantizationType.Q8_0
    expected = merged["model.layers.1.self_attn.q_proj.weight"].numpy()  # (64, 64)
    restored = unpermute_rope(gguf.quants.dequantize(q.data, q.tensor_type).reshape(expected.shape), 4)
    step = np.abs(expected).max() / 127
    assert np.abs(restored - expected).max() <= step
    assert not np.array_equal(restored, expected)  # it really is quantized


def test_rope_permutation_pairs_each_dimension_with_its_rotation_partner() -> None:
    rows = np.arange(8, dtype=np.float32)[:, None]  # one head of 8 dims: i rotates with i + 4
    assert permute_rope(rows, 1)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    np.testing.assert_array_equal(unpermute_rope(permute_rope(rows, 1), 1), rows)


def test_gguf_refuses_an_architecture_llama_cpp_would_misread(tmp_path) -> None:
    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=259)  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    make_tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ExportError) as caught:
        write_gguf(tmp_path, tmp_path / "out.gguf")
    assert caught.value.code == "export_unsupported" and "Qwen2ForCausalLM" in caught.value.message
    assert not (tmp_path / "out.gguf").exists()


def test_export_request_names_bad_input() -> None:
    for args, fragment in [
        (("zip",), "format"),
        (("gguf", "q4_0"), "quantization"),
        (("merged", "f16"), "gguf"),
    ]:
        with pytest.raises(ExportError, match=fragment) as caught:
            ExportRequest(*args)
        assert caught.value.code == "export_invalid"


def test_parallel_exports_build_once(source, tmp_path, monkeypatch) -> None:
    calls: list[str] = []
    real = build.BUILDERS["adapter"]

    def counted(*args):
        calls.append(threading.current_thread().name)
        threading.Event().wait(0.3)  # holds the lock while the other thread arrives
        return real(*args)

    monkeypatch.setitem(build.BUILDERS, "adapter", counted)
    results: list[Path] = []

    def run() -> None:
        results.append(export_model(source, ExportRequest("adapter"), tmp_path))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1] and results[0].is_file()
    assert [p.name for p in results[0].parent.iterdir() if p.name.startswith(".build-")] == []


def test_a_file_cached_by_an_older_exporter_is_rebuilt_not_served(source, tmp_path) -> None:
    # v1 kept files straight under the adapter's folder; one such file (say, a GGUF whose pre-tokenizer
    # llama.cpp refuses) must not come back from the cache.
    stale = tmp_path / source.adapter_sha256 / "adapter.tar"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"written by an older exporter")
    older = tmp_path / source.adapter_sha256 / "v1" / "adapter.tar"
    older.parent.mkdir()
    older.write_bytes(b"written by an older exporter")

    path = export_model(source, ExportRequest("adapter"), tmp_path)

    assert path == tmp_path / source.adapter_sha256 / f"v{build.EXPORTER_VERSION}" / "adapter.tar"
    with tarfile.open(path) as archive:
        assert archive.getnames()  # a real archive, built now
    assert not stale.exists() and not older.exists()
