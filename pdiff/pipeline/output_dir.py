"""The output folder (paths.output_dir): whether it can be written, checked on the command line
before Hydra makes it (hydra.run.dir=${paths.output_dir}), pdiff's marker in it, and the lock a run
holds on it."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config.command_line import given_values
from pdiff.errors import ConfigError
from pdiff.training import distributed


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be written in `folder` (made with its parents when absent), or None when
    they can."""
    folder = Path(folder).expanduser()
    for path in (folder, *folder.parents):
        if path.is_symlink() and not path.exists():
            where = "is" if path == folder else f"lies under {path},"
            return (
                f"{where} a dangling symbolic link (to {os.readlink(path)}): remove it, or point "
                "it at a folder"
            )
        if path.exists():
            break
    if folder.is_dir() and not made_by_pdiff(folder):
        held = sorted(entry.name for entry in folder.iterdir())
        return (
            f"is a folder pdiff did not make, holding {', '.join(held[:3])}"
            f"{', ...' if len(held) > 3 else ''}: "
            "pdiff writes only into a new or empty folder, or one it made"
        )
    existing = next(
        path for path in (folder, *folder.parents) if path.exists()
    )  # "/" or "." at the end
    if not existing.is_dir():
        return (
            "is an existing file"
            if existing == folder
            else f"lies under {existing}, an existing file"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        why = (
            "a read-only file system"
            if os.statvfs(existing).f_flag & os.ST_RDONLY
            else "no write permission"
        )
        return f"cannot be written: {existing} is not writable ({why})"
    return None


OUTPUT_DIR_KEY = "paths.output_dir"
HYDRA_JOB_LOGS = (
    "sweep.log",
    "submit.log",
)  # Hydra writes its job's log into the run folder before pdiff starts
MARKER_FILE = (
    ".pdiff"  # written into every output folder before anything else, by a run or a SLURM chain
)
MARKER_TEXT = "pdiff output folder: pdiff may write here\n"
LEGACY_LOCK = re.compile(
    r"pid \d+ on \S+, since \d{4}-\d\d-\d\d"
)  # what pdiff before the marker left in .pdiff.lock


def _head(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[:200]
    except OSError:
        return ""


def _marked(folder: Path) -> bool:
    """`folder` holds pdiff's marker (or, made before the marker, the lock line a pdiff run
    wrote)."""
    return _head(folder / MARKER_FILE) == MARKER_TEXT or bool(
        LEGACY_LOCK.match(_head(folder / ".pdiff.lock"))
    )


def made_by_pdiff(folder: Path) -> bool:
    """An empty folder, or one holding pdiff's marker (or a multirun's points, each holding it).
    Names alone prove nothing: a folder of the user's holding a config.yaml or a zoo/ is not
    pdiff's."""
    entries = [entry for entry in folder.iterdir() if entry.name not in HYDRA_JOB_LOGS]
    return (
        not entries
        or _marked(folder)
        or any(entry.is_dir() and _marked(entry) for entry in entries)
    )


def mark_made_by_pdiff(folder: Path) -> None:
    """Make `folder` (with its parents) and mark it as pdiff's, before anything else is written into
    it."""
    folder.mkdir(parents=True, exist_ok=True)
    if _head(folder / MARKER_FILE) != MARKER_TEXT:
        atomic.write_text(folder / MARKER_FILE, MARKER_TEXT)


def check_output_dir_overrides(overrides: list[str]) -> None:
    """ConfigError for a command-line paths.output_dir that is empty, a file, or not writable,
    before Hydra makes the run folder (hydra.run.dir=${paths.output_dir}: it would fail with a
    traceback, or write into the current folder).

    `overrides` is the command line after the program: flags (-m, --config-name X) and arguments
    that are no override are skipped; values Hydra resolves later (interpolations) are left to it
    and to config.validate.
    """
    for folder in given_values(overrides, OUTPUT_DIR_KEY):
        if folder is None or "${" in str(folder):
            continue
        problem = (
            "is empty: the whole pipeline would be written into the current folder"
            if not str(folder).strip()
            else folder_problem(Path(str(folder)))
        )
        if problem:
            raise ConfigError(
                f"{OUTPUT_DIR_KEY}={str(folder)!r} is invalid: {problem}; give a folder that can "
                "be made and written (new, or made by pdiff)"
            )


LOCK_FILE = ".pdiff.lock"


@contextmanager
def output_lock(cfg: DictConfig) -> Iterator[None]:
    """Hold DIR/.pdiff.lock for this run (rank 0 of a launch): a second run into the same folder is
    refused."""
    if not distributed.detect().is_main:
        yield
        return
    output_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    mark_made_by_pdiff(output_dir)
    with open(output_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ConfigError(
                f"paths.output_dir={output_dir} is in use by another pdiff run ({holder}): wait "
                "for it to end, or use another paths.output_dir"
            ) from None
        lock.truncate(0)
        lock.write(
            f"pid {os.getpid()} on {socket.gethostname()}, "
            f"since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        )
        lock.flush()
        yield
