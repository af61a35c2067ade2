"""Atomic file writes (temp file in the same folder, fsync, rename), safe loads, and whether a
folder can take them.

A write the disk has no room for (ENOSPC, or EDQUOT for a quota) raises StorageError naming the file
and the free space, and leaves neither the temp file nor a partial file at the target path.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pdiff.errors import StorageError, ZooError

FULL_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}


def _full_errno(error: BaseException | None) -> int | None:
    """ENOSPC or EDQUOT when `error` or an exception it came from is one: an OSError, or a library's
    error that only quotes it (safetensors says `(os error 28)`; torch's archive writer raises a
    RuntimeError from it)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        for code in FULL_ERRNOS:
            quoted = os.strerror(code) in str(error) or f"(os error {code})" in str(error)
            if quoted or (isinstance(error, OSError) and error.errno == code):
                return code
        error = error.__cause__ or error.__context__
    return None


def _storage_error(path: Path, tmp: str, code: int, size: int | None) -> StorageError:
    folder = next(parent for parent in path.parents if parent.exists())
    usage = shutil.disk_usage(folder)
    written = Path(tmp).stat().st_size if tmp and Path(tmp).exists() else 0
    needs = f" (it needs about {size:,})" if size is not None else ""
    error = StorageError(
        f"{FULL_ERRNOS[code]}: cannot write {path}: {usage.free:,} bytes were free of {usage.total:,} "
        f"in {folder} when {written:,} bytes of it were written{needs}; the path is left as it was. "
        "Free space on that disk, or write to another (e.g. paths.output_dir=DIR)"
    )
    error.errno = code
    return error


def write_file(path: Path, write: Callable[[str], None], size: int | None = None) -> None:
    """Write `path` atomically: `write(tmp)` fills a temp file in the same folder, then it is synced
    and renamed.

    On any failure the temp file is removed and `path` is untouched; a full disk raises StorageError
    (naming the file's `size` in bytes, when the caller knows it).
    """
    path = Path(path)
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are shared like any other file
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        code = _full_errno(error)
        storage_error = _storage_error(path, tmp, code, size) if code is not None else None
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if storage_error is not None:
            raise storage_error from error
        raise


def write_json(path: Path, data: Any) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")

    write_file(path, write)


JSON_CHECKSUM_KEY = "json_sha256"  # a checked JSON file's digest of its own other contents


def json_digest(data: Any) -> str:
    """sha256 of `data` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(
        json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def write_checked_json(path: Path, data: dict) -> None:
    """`data` as JSON with its own digest under JSON_CHECKSUM_KEY, so an edit by hand is told from
    pdiff's write."""
    write_json(path, {**data, JSON_CHECKSUM_KEY: json_digest(data)})


def read_checked_json(path: Path) -> dict:
    """A file write_checked_json wrote, without its digest; ZooError naming the file when it is not
    valid JSON or its contents do not match the digest (edited, truncated or from an older pdiff).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ZooError(
            f"{path} is not valid JSON ({error}): it was damaged; restore it, or use a new "
            "paths.output_dir"
        ) from error
    if not isinstance(data, dict) or JSON_CHECKSUM_KEY not in data:
        raise ZooError(
            f"{path} carries no {JSON_CHECKSUM_KEY}: it was not written by this pdiff (or was edited); "
            "restore it, or use a new paths.output_dir"
        )
    recorded = data.pop(JSON_CHECKSUM_KEY)
    if json_digest(data) != recorded:
        raise ZooError(
            f"{path} does not match its own checksum ({JSON_CHECKSUM_KEY}): it was edited or damaged "
            "after pdiff wrote it; restore it, or use a new paths.output_dir"
        )
    return data


def write_text(path: Path, text: str) -> None:
    write_file(path, lambda tmp: Path(tmp).write_text(text))


METADATA_KEY = (
    "pdiff"  # safetensors writes a metadata map in random key order: one key keeps the bytes fixed
)


def write_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Tensors (and string metadata) to a safetensors file; equal inputs give equal bytes."""
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    header = {METADATA_KEY: json.dumps(metadata, sort_keys=True)} if metadata else None
    size = sum(
        tensor.nbytes for tensor in contiguous.values()
    )  # the data; the header adds a few hundred bytes
    write_file(path, lambda tmp: save_file(contiguous, tmp, metadata=header), size)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else metadata


MAPPABLE_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
STREAM_BYTES = 64 * 2**20


def _safetensors_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        return size, json.loads(handle.read(size))


def safetensors_names(path: Path) -> list[str]:
    """The tensor names a safetensors file holds (its header only is read)."""
    return [name for name in _safetensors_header(path)[1] if name != "__metadata__"]


def map_tensor(path: Path, name: str) -> torch.Tensor:
    """One float (or int64) tensor of a safetensors file as a memory map, read on demand (no copy,
    no pickle).

    The map is copy-on-write: the file is never changed, whatever is done to the tensor.
    """
    return torch.from_numpy(_map_array(path, name, mode="c"))


def _map_array(path: Path, name: str, mode: str = "r") -> np.memmap:
    size, header = _safetensors_header(path)
    if name not in header or header[name]["dtype"] not in MAPPABLE_DTYPES:
        raise ValueError(f"{path} has no tensor {name!r} of dtype {sorted(MAPPABLE_DTYPES)}")
    begin, _ = header[name]["data_offsets"]
    return np.memmap(
        path,
        dtype=MAPPABLE_DTYPES[header[name]["dtype"]],
        mode=mode,
        offset=8 + size + begin,
        shape=tuple(header[name]["shape"]),
    )


def concat_safetensors(
    path: Path, sources: list[Path], names: list[str], metadata: dict[str, str]
) -> None:
    """Write `names`, each the row-wise concatenation of that tensor in every source, streamed
    through maps.

    Rows of a C-ordered tensor are contiguous, so the result is written block by block and never
    held whole.
    """
    maps = {name: [_map_array(source, name) for source in sources] for name in names}
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, parts in maps.items():
        if len({part.shape[1:] for part in parts}) != 1 or len({part.dtype for part in parts}) != 1:
            raise ValueError(
                f"cannot concatenate {name!r}: shapes {[part.shape for part in parts]}"
            )
        nbytes = sum(part.nbytes for part in parts)
        dtype = next(key for key, value in MAPPABLE_DTYPES.items() if value == parts[0].dtype)
        header[name] = {
            "dtype": dtype,
            "shape": [sum(len(part) for part in parts), *parts[0].shape[1:]],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(struct.pack("<Q", len(encoded)) + encoded)
            for parts in maps.values():
                for part in parts:
                    rows = max(1, STREAM_BYTES // max(part[0].nbytes if len(part) else 1, 1))
                    for first in range(0, len(part), rows):
                        handle.write(np.ascontiguousarray(part[first : first + rows]).tobytes())

    write_file(path, write, 8 + len(encoded) + offset)


def write_torch(path: Path, state: dict) -> None:
    """Training state (tensors, numbers, strings only), loadable with weights_only=True. Saved
    through a file handle, so the archive's inner folder is not named after the random temp file:
    equal states, equal bytes."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)

    write_file(path, save)


def read_torch(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


_DIGESTS: dict[tuple, str] = {}


def sha256(path: Path) -> str:
    """The file's sha256, computed once per version of it in this process (each stage checks the zoo
    it reads)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
