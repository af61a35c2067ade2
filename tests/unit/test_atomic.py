"""Atomic writes on a full disk (a real 1 MB tmpfs), and the launchers' checks of paths.output_dir."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from pdiff import atomic
from pdiff.errors import ConfigError, StorageError
from pdiff.pipeline.output_dir import check_output_dir_overrides

REPO = Path(__file__).resolve().parents[2]
BIG = {"x": torch.arange(400_000, dtype=torch.float32)}  # 1.6 MB: more than the disk holds


def _mount_tmpfs(folder: Path, options: str) -> None:
    """Mount a tmpfs at `folder`, or skip naming what is missing."""
    folder.mkdir(exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command here: the full-disk tests need a real tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs ({options}) at {folder}: {done.stderr.strip()} (needs root with "
            "CAP_SYS_ADMIN)"
        )


@contextmanager
def _tmpfs(folder, options: str):
    """A tmpfs mounted at `folder` with `options` while the block runs."""
    _mount_tmpfs(folder, options)
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    with _tmpfs(tmp_path / "disk", "size=1m") as disk:
        yield disk


@pytest.fixture
def read_only_disk(tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as disk:
        yield disk


def _torch(path):
    atomic.write_torch(path, {"state": BIG["x"], "step": 3})


def _concat(path):
    sources = []
    for index in range(2):
        sources.append(
            path.parents[2] / f"source{index}.safetensors"
        )  # beside the disk (DISK/out/FILE), not on it
        atomic.write_safetensors(sources[-1], {"params": BIG["x"].reshape(-1, 100)[:2500]})
    atomic.concat_safetensors(path, sources, ["params"], {})


WRITERS = {
    "json": lambda path: atomic.write_json(path, {"values": list(range(200_000))}),
    "text": lambda path: atomic.write_text(path, "pdiff " * 300_000),
    "safetensors": lambda path: atomic.write_safetensors(path, BIG, {"spec": "x"}),
    "torch": _torch,
    "concat": _concat,
}


@pytest.mark.parametrize("kind", WRITERS)
def test_a_full_disk_says_so_and_leaves_no_partial_file(small_disk, kind):
    before = sorted(os.listdir(small_disk))
    target = small_disk / "out" / f"result.{kind}"
    with pytest.raises(StorageError) as raised:
        WRITERS[kind](target)
    message = str(raised.value)
    assert message.startswith(f"the disk is full: cannot write {target}: ")
    assert f" bytes were free of 1,048,576 in {target.parent} when " in message
    assert "; the path is left as it was. Free space on that disk" in message
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, OSError)
    free, written = (
        int(message.split(part)[0].split(" ")[-1].replace(",", ""))
        for part in (" bytes were free", " bytes of it were written")
    )
    assert free + written <= 1_048_576  # measured at the failure, before the temp file was removed
    if kind in ("safetensors", "concat"):  # these writers know the size they need
        assert int(message.split("(it needs about ")[1].split(")")[0].replace(",", "")) > 1_048_576
    assert (
        not target.exists() and os.listdir(target.parent) == []
    )  # neither the target nor the temp file
    assert sorted(os.listdir(small_disk)) == sorted([*before, "out"])


def test_a_full_disk_keeps_the_file_that_was_there(small_disk):
    target = small_disk / "table.json"
    atomic.write_json(target, {"kept": True})
    with pytest.raises(StorageError, match=r"the disk is full: cannot write .*table.json"):
        atomic.write_json(target, {"values": list(range(200_000))})
    assert json.loads(target.read_text()) == {"kept": True} and os.listdir(small_disk) == [
        "table.json"
    ]


def test_a_full_quota_and_other_errors(tmp_path):
    def over_quota(tmp: str) -> None:
        Path(tmp).write_bytes(b"x" * 100)
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), tmp)

    with pytest.raises(
        StorageError,
        match=r"the disk quota is exceeded: cannot write .*q.json: .* when 100 bytes of "
        r"it were written; the path is left as it was",
    ):
        atomic.write_file(tmp_path / "q.json", over_quota)

    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise ValueError("not a disk problem")

    with pytest.raises(ValueError, match="not a disk problem"):
        atomic.write_file(tmp_path / "v.json", broken)
    assert os.listdir(tmp_path) == []


def test_output_dir_overrides_are_checked_before_hydra(tmp_path):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    cases = {
        f"paths.output_dir={existing}": "is an existing file",
        f"paths.output_dir={existing}/run": f"lies under {existing}, an existing file",
        "paths.output_dir=": "is empty: the whole pipeline would be written into the current folder",
        "paths.output_dir=''": "is empty",
        f"++paths.output_dir={tmp_path / 'new'},{existing}": "is an existing file",
    }
    for override, problem in cases.items():
        with pytest.raises(ConfigError, match=r"paths.output_dir='.*' is invalid: ") as raised:
            check_output_dir_overrides(["-m", "seed=1", override])
        assert problem in str(raised.value)
    check_output_dir_overrides(
        [
            "-m",
            "--config-name",
            "config",
            f"paths.output_dir={tmp_path / 'new' / 'run'}",
            "paths.output_dir=${oc.env:HOME}/x",
            "paths.output_dirs=",
            "task.param.k=5",
        ]
    )
    assert existing.read_text() == "keep me"


def test_a_read_only_output_dir_is_refused(read_only_disk):
    with pytest.raises(
        ConfigError,
        match=rf"paths.output_dir='{read_only_disk}/run' is invalid: cannot be written: "
        rf"{read_only_disk} is not writable \(a read-only file system\)",
    ):
        check_output_dir_overrides([f"paths.output_dir={read_only_disk}/run"])


def _launch(script: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ, PDIFF_QUIET="1"),
    )


@pytest.mark.slow
@pytest.mark.parametrize("script, bad", [("sweep.py", "file"), ("submit.py", "empty")])
def test_the_launchers_refuse_a_bad_output_dir_in_one_line(tmp_path, script, bad):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    value, problem = {"file": (str(existing), "is an existing file"), "empty": ("", "is empty")}[
        bad
    ]
    hydra_here = (REPO / ".hydra").exists()
    done = _launch(script, ["stage=collect", f"paths.output_dir={value}"])
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"pdiff: error: paths.output_dir={value!r} is invalid: {problem}")
    assert (
        existing.read_text() == "keep me" and (REPO / ".hydra").exists() == hydra_here
    )  # nothing written here


@pytest.mark.slow
def test_sweep_prints_a_full_disk_without_a_traceback(tmp_path):
    """launch/sweep.py with the pipeline replaced by one write that hits ENOSPC, as a full disk
    would."""
    script = textwrap.dedent(f"""
        import errno, os, runpy, sys
        import pdiff.pipeline.run
        from pdiff import atomic

        def full(tmp):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        pdiff.pipeline.run.run_pipeline = lambda cfg: atomic.write_file({str(tmp_path / "run" / "zoo.json")!r}, full)
        sys.argv = ["launch/sweep.py", "stage=collect", "paths.output_dir={tmp_path / "run"}"]
        runpy.run_path("launch/sweep.py", run_name="__main__")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ, PDIFF_QUIET="1"),
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"pdiff: error: the disk is full: cannot write {tmp_path / 'run' / 'zoo.json'}: "
        )
    )
    assert not (tmp_path / "run" / "zoo.json").exists()
