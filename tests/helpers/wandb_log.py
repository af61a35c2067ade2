"""Read the history rows back from a W&B offline run file (run-<id>.wandb), without wandb-core or a
network.

The file is wandb's LevelDB-style log: a 7-byte header (':W&B', magic, version), then 32 KiB blocks
of records (crc32, length, type: full/first/middle/last), each a protobuf `Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, position, pending = [], HEADER, b""
    while position + HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < HEADER:  # the rest of a block too short for a header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        payload = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def history(path: Path) -> list[dict]:
    """Each logged row as {key: value}."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or ".".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def config(path: Path) -> dict:
    """The run's config as W&B stored it (last value of each key)."""
    values = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        updates = (
            record.config.update
            if kind == "config"
            else record.run.config.update
            if kind == "run"
            else []
        )
        for item in updates:
            values[item.key] = json.loads(item.value_json)
    return values


def run_info(path: Path) -> dict:
    """The run's group, display name and tags as W&B stored them."""
    run = next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")
    return {"group": run.run_group, "name": run.display_name, "tags": list(run.tags)}
