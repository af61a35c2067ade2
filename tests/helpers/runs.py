"""Running the pipeline as a user would (launch/sweep.py in a subprocess), and the runs and zoos
tests share."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pdiff import atomic
from pdiff.pipeline.output_dir import mark_made_by_pdiff
from pdiff.zoo.store import ParamZoo, run_path
from tests.helpers.configs import REPO


def stage_files(directory: Path, stages: tuple[str, ...]) -> dict[str, bytes]:
    """Every file under the run's `stages` folders (zoo, generator, generated, ...), by its path in
    the run: what must stay byte-identical when evaluation's inputs change."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for stage in stages
        for path in sorted((directory / stage).rglob("*"))
        if path.is_file()
    }


def write_zoo(directory: Path, zoo: ParamZoo) -> ParamZoo:
    """Write an in-memory zoo to `directory` the way collection does (one collection run, merged);
    returns it loaded."""
    collected = run_path(directory, 0, 1)
    atomic.write_safetensors(
        collected, {"params": zoo.vectors.float(), "val_accuracy": zoo.val_accuracy.double()}
    )
    return ParamZoo.merge(directory, [collected], zoo.spec, zoo.meta)


def run_sweep(
    args: list[str], timeout: int = 600, prefix: list[str] = ()
) -> subprocess.CompletedProcess:
    """Run launch/sweep.py as a user would (after a command `prefix`, e.g. unshare); returns the
    finished process."""
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline")
    return subprocess.run(
        [*prefix, sys.executable, str(REPO / "launch" / "sweep.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`result`, after asserting it exited 0 (the failure shows the tail of its output)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@dataclass(frozen=True)
class FinishedRun:
    """A finished launch/sweep.py run: its folder, the arguments that made it and what it printed."""

    out: Path
    args: tuple[str, ...]
    output: str


def copy_run(run: FinishedRun, dest: Path, parts: tuple[str, ...] | None = None) -> Path:
    """A copy of `run`'s folder in `dest` (file times kept), or of only its `parts`, e.g. ("zoo",
    "timings.json")."""
    if parts is None:
        shutil.copytree(run.out, dest, symlinks=True)
        return dest
    dest.mkdir(parents=True)
    mark_made_by_pdiff(
        dest
    )  # what a run writes first: the copy is pdiff's folder like the run's own
    for part in parts:
        source = run.out / part
        if source.is_dir():
            shutil.copytree(source, dest / part, symlinks=True)
        else:
            shutil.copy2(source, dest / part)
    return dest


def made_once(
    factory: pytest.TempPathFactory, name: str, make: Callable[[Path], str]
) -> tuple[Path, str]:
    """The folder `name`, made by `make(folder)` once per test run and shared by every xdist worker
    of it (each worker's session fixtures would otherwise make their own); returns the folder and
    what `make` returned. Under xdist the workers' temporary folders share a parent that is this
    run's own; a lock lets one worker make the folder while the others wait for it."""
    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed to make it
            folder.mkdir()
            atomic.write_text(done, make(folder))
    return folder, done.read_text()
