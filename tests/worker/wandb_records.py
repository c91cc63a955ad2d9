"""Reading an offline wandb run file (``run-<id>.wandb``): the records wandb would upload on ``wandb sync``.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of
chunks, each a 7-byte header (crc32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last) and a
piece of one serialized ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

FILE_HEADER = 7
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", "not a wandb run file"
    payloads, pending, position = [], b"", FILE_HEADER
    while position + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < CHUNK_HEADER:  # the block's tail is padding
            position += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + CHUNK_HEADER])
        piece = data[position + CHUNK_HEADER : position + CHUNK_HEADER + length]
        position += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = piece if kind in (FULL, FIRST) else pending + piece
        if kind in (FULL, LAST):
            payloads.append(pending)
    return payloads


def read_run(path: Path) -> dict[str, Any]:
    """``{"run": {project, entity, name, tags, id}, "config": {...}, "history": [{key: value}, ...]}``."""
    found: dict[str, Any] = {"run": None, "config": {}, "history": []}
    for payload in _payloads(path.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            found["config"] |= _items(run.config.update)
            found["run"] = {
                "project": run.project,
                "entity": run.entity,
                "name": run.display_name,
                "tags": list(run.tags),
                "id": run.run_id,
            }
        elif kind == "config":
            found["config"] |= _items(record.config.update)
        elif kind == "history":
            found["history"].append(_items(record.history.item))
    return found


def _items(items: Any) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
