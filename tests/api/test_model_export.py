"""``GET /v1/models/{model}/content`` on the tiny local model: adapter, merged and GGUF exports of fine-tuned
models and checkpoints, each built once, and the refusals (other projects, base models, architectures)."""

from __future__ import annotations

import io
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from diablo_core.export import build
from diablo_core.generation.decoding import build_prompt_ids
from diablo_core.methods.diablo.adapter_io import WEIGHTS_FILE
from diablo_core.methods.lora.config import LoRAConfig
from diablo_core.models.loading import load_base_model
from registry.artifacts import add_checkpoint, register_adapter
from registry.db import session_scope
from registry.jobs import create_job
from tests.api.conftest import assert_error, record_adapter
from tests.api.tiny_serving import (  # noqa: F401 (fixtures by name)
    CONFIGS,
    TinyServing,
    serving_settings,
    sha256_of,
    tiny_fixture,
    write_adapter,
    write_lora_adapter,
)
from tests.core.tiny_tokenizer import make_tiny_tokenizer

MESSAGES = [{"role": "user", "content": "Add 17 and 25"}]


def content(client: TestClient, model: str, **params: str):
    return client.get(f"/v1/models/{model}/content", params=params)


def unpack(body: bytes, into: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        tar.extractall(into, filter="data")
        (root,) = {name.split("/")[0] for name in tar.getnames()}
    return into / root


def greedy_text(directory: Path, max_new_tokens: int) -> str:
    """What plain transformers answers (greedy) with the checkpoint in ``directory``."""
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    prompt = torch.tensor([build_prompt_ids(tokenizer, messages=MESSAGES)])
    tokens = model.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False)[0, prompt.shape[1] :]
    eos = model.generation_config.eos_token_id
    eos = set(eos) if isinstance(eos, list) else {eos}
    kept = tokens.tolist()
    cut = next((i for i, token in enumerate(kept) if token in eos), len(kept))
    return tokenizer.decode(kept[:cut])


def test_merged_export_answers_as_the_service(client, settings, tiny, tmp_path) -> None:
    tiny.install(settings, "ft:tiny::b", "b")
    body = {"model": "ft:tiny::b", "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    served = client.post("/v1/chat/completions", json=body)
    assert served.status_code == 200, served.text
    response = content(client, "ft:tiny::b", format="merged")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    assert 'filename="ft_tiny_b-merged.tar"' in response.headers["content-disposition"]
    checkpoint = unpack(response.content, tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md"} <= {
        path.name for path in checkpoint.iterdir()
    }
    assert greedy_text(checkpoint, 16) == served.json()["choices"][0]["message"]["content"]


def test_merged_export_of_a_lora_model_answers_as_the_service(client, settings, tiny, tmp_path) -> None:
    folder = write_lora_adapter(tiny.base, LoRAConfig(rank=4, alpha=8.0), settings.adapters_dir / "lora", 7)
    size = (folder / WEIGHTS_FILE).stat().st_size
    record_adapter(settings, "ft:tiny::lora", folder, size, base_model="tiny", sha256=sha256_of(folder))
    body = {"model": "ft:tiny::lora", "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    served = client.post("/v1/chat/completions", json=body)
    base = client.post("/v1/chat/completions", json=body | {"model": "tiny"})
    assert served.status_code == base.status_code == 200, served.text + base.text
    answer = served.json()["choices"][0]["message"]["content"]
    assert answer != base.json()["choices"][0]["message"]["content"]  # the adapter is applied
    response = content(client, "ft:tiny::lora", format="merged")
    assert response.status_code == 200, response.text
    checkpoint = unpack(response.content, tmp_path)
    assert greedy_text(checkpoint, 16) == answer
    assert "LoRA (PEFT) of rank 4" in (checkpoint / "README.md").read_text()


def test_checkpoints_export_their_adapter_and_gguf(client, settings, tiny, tmp_path) -> None:
    with session_scope(settings.database_url) as session:
        job_id = create_job(session, model="tiny", training_file="file-x").id
    folder = settings.adapters_dir / job_id / "checkpoints" / "step-5"
    folder.parent.mkdir(parents=True)
    tiny.install(settings, "ft:tiny::a", "a").rename(folder)  # the files, under a checkpoint's name
    name = "ft:tiny::a:ckpt-step-5"
    with session_scope(settings.database_url) as session:
        add_checkpoint(session, job_id, 5, name, storage_path=str(folder), sha256=sha256_of(folder))
    adapter = content(client, name)
    assert adapter.status_code == 200, adapter.text
    files = unpack(adapter.content, tmp_path)
    assert (files / WEIGHTS_FILE).read_bytes() == (folder / WEIGHTS_FILE).read_bytes()
    quantized = content(client, name, format="gguf", quantization="q8_0")
    assert quantized.status_code == 200, quantized.text
    (tmp_path / "model.gguf").write_bytes(quantized.content)
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q8_0
    assert (settings.data_dir / "exports" / sha256_of(folder) / "v2" / "model-q8_0.gguf").is_file()


def test_refusals_have_codes(client, settings, tiny) -> None:
    theirs = tiny.adapters["a"]
    with session_scope(settings.database_url) as session:
        register_adapter(
            session, name="ft:tiny::theirs", job_id=None, base_model="tiny", storage_path=str(theirs),
            sha256=sha256_of(theirs), size_bytes=1, project_id="someone-else",
        )  # fmt: skip
    assert_error(content(client, "ft:tiny::theirs"), 404, "model_not_found", "model")
    assert_error(content(client, "ft:tiny::nothing"), 404, "model_not_found", "model")
    for base in ("tiny", "default"):
        assert_error(content(client, base, format="merged"), 400, "model_not_exportable", "model")
    tiny.install(settings, "ft:tiny::a", "a")
    assert_error(content(client, "ft:tiny::a", format="zip"), 400, "invalid_value", "format")
    refused = content(client, "ft:tiny::a", format="merged", quantization="q8_0")
    assert_error(refused, 400, "invalid_value", "quantization")


def test_gguf_of_an_architecture_llama_cpp_lacks_is_refused(client, settings, tmp_path) -> None:
    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=259)  # fmt: skip
    directory = settings.data_dir / "models" / "qwen"
    Qwen2ForCausalLM(config).save_pretrained(directory)
    make_tiny_tokenizer().save_pretrained(directory)
    adapter = write_adapter(load_base_model(str(directory)), CONFIGS["a"], tmp_path / "adapter", seed=1)
    with session_scope(settings.database_url) as session:
        register_adapter(
            session, name="ft:qwen::x", job_id=None, base_model="qwen", storage_path=str(adapter),
            sha256=sha256_of(adapter), size_bytes=1,
        )  # fmt: skip
    assert_error(content(client, "ft:qwen::x", format="gguf"), 422, "export_unsupported", "format")
    assert content(client, "ft:qwen::x", format="merged").status_code == 200


def test_parallel_requests_build_once(client, settings, tiny, monkeypatch) -> None:
    tiny.install(settings, "ft:tiny::c", "c")
    calls: list[int] = []
    real = build.BUILDERS["merged"]

    def counted(*args):
        calls.append(1)
        threading.Event().wait(0.3)  # the second request arrives while this one builds
        return real(*args)

    monkeypatch.setitem(build.BUILDERS, "merged", counted)
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: content(client, "ft:tiny::c", format="merged"), range(2)))
    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].content == responses[1].content
    assert len(calls) == 1
