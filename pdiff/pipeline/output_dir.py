"""The output folder (paths.output_dir): whether it can be written, checked on the command line before Hydra makes
it (hydra.run.dir=${paths.output_dir})."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from hydra.errors import HydraException

from pdiff.errors import ConfigError


def folder_problem(folder: Path) -> str | None:
    """Why files cannot be written in `folder` (made with its parents when absent), or None when they can."""
    folder = Path(folder).expanduser()
    if folder.is_symlink() and not folder.exists():
        return f"is a dangling symbolic link (to {os.readlink(folder)}): remove it, or point it at a folder"
    if folder.is_dir() and not made_by_pdiff(folder):
        held = sorted(entry.name for entry in folder.iterdir())
        return (f"is a folder pdiff did not make, holding {', '.join(held[:3])}{', ...' if len(held) > 3 else ''}: "
                "pdiff writes only into a new or empty folder, or one it made")
    existing = next(path for path in (folder, *folder.parents) if path.exists())  # "/" or "." at the end
    if not existing.is_dir():
        return "is an existing file" if existing == folder else f"lies under {existing}, an existing file"
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "a read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY else "no write permission"
        return f"cannot be written: {existing} is not writable ({why})"
    return None


OUTPUT_DIR_KEY = "paths.output_dir"
# what a folder pdiff made holds (a run: its lock and config; a multirun: its points; a SLURM chain: .submitit)
PDIFF_MARKERS = (".pdiff.lock", "config.yaml", "zoo", ".submitit", "sweep.json")
HYDRA_JOB_LOGS = ("sweep.log", "submit.log")  # Hydra writes its job's log into the run folder before pdiff starts


def made_by_pdiff(folder: Path) -> bool:
    """An empty folder, or one holding what pdiff writes (or a multirun's points, each holding it)."""
    entries = [entry for entry in folder.iterdir() if entry.name not in HYDRA_JOB_LOGS]
    if not entries or any((folder / marker).exists() for marker in PDIFF_MARKERS):
        return True
    return any(entry.is_dir() and any((entry / marker).exists() for marker in PDIFF_MARKERS) for entry in entries)


def _given_values(override) -> list:
    """The values one parsed override sets: each choice of a sweep, none of a range or glob sweep."""
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return value.list
    return [] if override.is_sweep_override() else [value]


def check_output_dir_overrides(overrides: list[str]) -> None:
    """ConfigError for a command-line paths.output_dir that is empty, a file, or not writable, before Hydra makes the
    run folder (hydra.run.dir=${paths.output_dir}: it would fail with a traceback, or write into the current folder).

    `overrides` is the command line after the program: flags (-m, --config-name X) and arguments that are no
    override are skipped; values Hydra resolves later (interpolations) are left to it and to config.validate.
    """
    parser = OverridesParser.create()
    for argument in overrides:
        if not argument.lstrip("+~").startswith(OUTPUT_DIR_KEY):
            continue
        try:
            override = parser.parse_override(argument)
        except HydraException:  # Hydra reports it
            continue
        if override.key_or_group != OUTPUT_DIR_KEY or override.is_delete():
            continue
        for folder in _given_values(override):
            if folder is None or "${" in str(folder):
                continue
            problem = ("is empty: the whole pipeline would be written into the current folder"
                       if not str(folder).strip() else folder_problem(Path(str(folder))))
            if problem:
                raise ConfigError(f"{OUTPUT_DIR_KEY}={str(folder)!r} is invalid: {problem}; give a folder that can be "
                                  "made and written (new, or made by pdiff)")
