"""The data directory: its layout and safe names, file hashes, durable writes, file locks, usage.

One home for how the api and the worker store things on disk. The checkpoint format inside a job's folder
belongs to ``diablo_core.training.checkpoints``; the lock is diablo_core's (``diablo_core.file_lock``),
which this package shares so the registry and the model loader lock the same way.
"""

from __future__ import annotations

from diablo_core.file_lock import file_lock
from registry.storage.durable import fsync_dir, fsync_file, fsync_tree, replace_durably
from registry.storage.hashing import cached_file_sha256, file_sha256
from registry.storage.layout import (
    job_dir,
    models_dir,
    published_adapter_dir,
    safe_dir_name,
    stored_path,
    token_counts_dir,
    uploaded_file_path,
)
from registry.storage.usage import storage_used

__all__ = [
    "cached_file_sha256",
    "file_lock",
    "file_sha256",
    "fsync_dir",
    "fsync_file",
    "fsync_tree",
    "job_dir",
    "models_dir",
    "published_adapter_dir",
    "replace_durably",
    "safe_dir_name",
    "storage_used",
    "stored_path",
    "token_counts_dir",
    "uploaded_file_path",
]
