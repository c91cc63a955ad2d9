"""The data directory's one home: layout and safe names, file hashes, the file lock."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from registry import storage
from registry.settings import Settings
from registry.storage.hashing import HASH_CHUNK_BYTES


def test_the_layout_puts_each_kind_of_file_in_its_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert storage.uploaded_file_path(settings, "file-1") == tmp_path / "files" / "file-1.jsonl"
    assert storage.models_dir(settings) == tmp_path / "models"
    assert storage.job_dir(settings.adapters_dir, "ftjob-1") == tmp_path / "adapters" / "ftjob-1"
    name = "ft:HuggingFaceTB/SmolLM2-135M-Instruct:my suffix:abc"
    assert storage.published_adapter_dir(settings.adapters_dir, name).name == storage.safe_dir_name(name)
    assert storage.safe_dir_name(name) == "ft-HuggingFaceTB-SmolLM2-135M-Instruct-my-suffix-abc"
    assert storage.safe_dir_name("../..") == "adapter"
    assert storage.stored_path("a/b", tmp_path) == tmp_path / "a" / "b"
    assert storage.stored_path("/abs/b", tmp_path) == Path("/abs/b")


def test_the_chunked_hash_equals_hashlib_and_the_cache_sees_a_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    data = os.urandom(HASH_CHUNK_BYTES * 2 + 17)  # more than one chunk, and a partial last one
    path.write_bytes(data)
    assert storage.file_sha256(path) == storage.cached_file_sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(b"rewritten")
    assert storage.cached_file_sha256(path) == hashlib.sha256(b"rewritten").hexdigest()


def test_the_file_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / "x.lock"  # the folder is created
    order: list[str] = []
    with storage.file_lock(lock):
        waiter = threading.Thread(target=lambda: _take(lock, order))
        waiter.start()
        time.sleep(0.2)
        order.append("first released")
    waiter.join(timeout=10)
    assert order == ["first released", "second took it"]


def _take(lock: Path, order: list[str]) -> None:
    with storage.file_lock(lock):  # its own open file: flock makes it wait for the first holder
        order.append("second took it")
