"""What a run reports while it works: metrics (always a JSONL file; also Weights & Biases when
logger=wandb, offline unless set online) and progress bars for long stages (rich; quiet when
PDIFF_QUIET=1)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pdiff import atomic
from pdiff.config import LoggerName, WandbMode
from pdiff.errors import ConfigError

log = logging.getLogger(__name__)
RUN_ID_FILE = "wandb_run_id.txt"
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Tracker:
    """Appends metric dicts to `metrics.jsonl` and mirrors them to a W&B run when one is configured."""

    def __init__(self, output_dir: Path, logger_cfg, config: dict, enabled: bool = True):
        """`enabled=False` (ranks other than 0) makes a tracker that records nothing."""
        self.path = Path(output_dir) / "metrics.jsonl"
        self._file, self.run = None, None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - held open for the run, closed in close()
        if LoggerName(logger_cfg.name) is LoggerName.wandb:
            self.run = _start_wandb(Path(output_dir), logger_cfg, config)

    def log(self, metrics: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps({"time": round(time.time(), 3), **metrics}) + "\n")
        except OSError as error:
            if error.errno not in atomic.FULL_ERRNOS:
                raise
            free = shutil.disk_usage(self.path.parent).free
            raise atomic.StorageError(
                f"{atomic.FULL_ERRNOS[error.errno]}: cannot append to {self.path} ({free:,} "
                "bytes free); free space on that disk, or use another paths.output_dir"
            ) from error
        if self.run is not None:
            self.run.log(metrics)

    def rewind(self, phase: str, step: int) -> None:
        """Drop the rows of `phase` logged after `step` (a resumed phase logs those steps again)."""
        if self._file is None:
            return
        key = f"{phase}/step"
        rows = self.path.read_text().splitlines()
        kept = [row for row in rows if json.loads(row).get(key, -1) <= step]
        if len(kept) == len(rows):
            return
        self._file.close()
        atomic.write_text(self.path, "".join(f"{row}\n" for row in kept))
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - held open for the run, closed in close()

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def log_artifacts(
        self,
        histograms: dict[str, list[float]],
        tables: dict[str, list[list[Any]]],
        images: list[Path] = (),
    ) -> None:
        """Histograms, small tables and the report's plots to W&B (the JSONL keeps the raw numbers
        elsewhere)."""
        if self.run is None:
            return
        import wandb

        payload: dict[str, Any] = {
            key: wandb.Histogram(values) for key, values in histograms.items()
        }
        for key, rows in tables.items():
            payload[key] = wandb.Table(columns=rows[0], data=rows[1:])
        for image in images:
            payload[f"report/{Path(image).stem}"] = wandb.Image(str(image))
        self.run.log(payload)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.run is not None:
            import wandb

            self.run.finish()
            wandb.teardown()  # wait for wandb-core to write everything and exit before this process goes on
            self.run = None


def run_tags(logger_cfg, config: dict) -> list[str]:
    """The task, the generator design and logger.tags (W&B tags are at most 64 characters)."""
    tags = [
        config.get("task", {}).get("name"),
        config.get("generator", {}).get("design"),
        *logger_cfg.tags,
    ]
    return list(dict.fromkeys(str(tag)[:64] for tag in tags if tag))


def recorded_run_id(output_dir: Path) -> str | None:
    """The W&B run id DIR/wandb_run_id.txt holds (None without the file); ConfigError naming the
    file when it holds no valid id."""
    id_file = Path(output_dir) / RUN_ID_FILE
    if not id_file.is_file():
        return None
    run_id = id_file.read_text(errors="replace").strip()
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise ConfigError(
            f"{id_file} holds {run_id[:40]!r}, not a W&B run id (1-64 letters, digits, _ or -): "
            "restore the id of this folder's W&B run (the suffix of DIR/wandb/*-run-<id>), or "
            "delete the file to start a new run"
        )
    return run_id


def _wandb_run_id(output_dir: Path) -> str:
    """This folder's W&B run id (DIR/wandb_run_id.txt), made on the first run; ConfigError naming
    the file when it holds no valid id, and a warning when it is gone while earlier runs of this
    folder are in DIR/wandb."""
    id_file = output_dir / RUN_ID_FILE
    run_id = recorded_run_id(output_dir)
    if run_id is not None:
        return run_id
    earlier = sorted(path.name for path in (output_dir / "wandb").glob("*run-*") if path.is_dir())
    if earlier:
        log.warning(
            "%s is missing but %s holds earlier W&B runs (%s): a new W&B run starts beside them; restore "
            "the id in that file to continue the earlier run instead",
            id_file,
            output_dir / "wandb",
            ", ".join(earlier[-2:]),
        )
    run_id = uuid.uuid4().hex[:8]
    atomic.write_text(id_file, run_id + "\n")
    return run_id


def _start_wandb(output_dir: Path, logger_cfg, config: dict):
    """Start or continue this output folder's W&B run; online failures fall back to offline in
    bounded time."""
    import wandb

    run_id = _wandb_run_id(output_dir)
    mode = WandbMode(logger_cfg.mode).value
    kwargs = dict(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        dir=str(output_dir),
        config=config,
        id=run_id,
        resume="allow",
        group=logger_cfg.group,
        name=logger_cfg.run_name or output_dir.name,
        tags=run_tags(logger_cfg, config),
        settings=wandb.Settings(init_timeout=logger_cfg.init_timeout_s, silent=True),
    )
    try:
        return wandb.init(mode=mode, **kwargs)
    except Exception as error:  # wandb raises several types for an unreachable or refused server
        if mode != "online":
            raise
        log.warning(
            "W&B online init failed (%s); logging offline to %s instead",
            error,
            output_dir / "wandb",
        )
        os.environ["WANDB_MODE"] = "offline"
        wandb.teardown()  # the failed attempt still holds the run id in wandb-core
        return wandb.init(mode="offline", **kwargs)


class StageProgress:
    """One bar: advance it, and set a short status text (loss, accuracy)."""

    def __init__(self, progress: Progress | None, task_id: int | None):
        self._progress, self._task_id = progress, task_id

    def advance(self, amount: int = 1, status: str | None = None) -> None:
        if self._progress is not None:
            fields = {"status": status} if status is not None else {}
            self._progress.update(self._task_id, advance=amount, **fields)


@contextmanager
def stage_progress(
    description: str, total: int, completed: int = 0, visible: bool = True
) -> Iterator[StageProgress]:
    """A bar for one stage; none when PDIFF_QUIET=1 or not `visible` (ranks other than 0)."""
    if os.environ.get("PDIFF_QUIET") == "1" or not visible:
        yield StageProgress(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    with Progress(*columns, transient=False) as progress:
        task_id = progress.add_task(description, total=total, completed=completed, status="")
        yield StageProgress(progress, task_id)
