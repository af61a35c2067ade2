"""The Hydra callback that ends a multirun: where each sweep point's report is, and the sweep's
table of figures (sweep.md, and W&B when logger=wandb)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pdiff.config import LoggerName, Stage
from pdiff.evaluation.seed_table import SWEEP_TABLE, sweep_group, sweep_table, write_sweep_summary
from pdiff.pipeline.run_summary import own_report, summary_line
from pdiff.tracking import Tracker


class ReportIndex(Callback):
    """Hydra callback: after a multirun, print where each sweep point's report is, then the mean and
    std of every figure over the points (sweep.md), logged to the sweep's W&B group when
    logger=wandb. A multirun whose one folder is the sweep folder itself (`-m` with no override that
    names a point) ends with the run's own line."""

    def __init__(self) -> None:
        # Hydra makes its callbacks just before the multirun starts
        self.started = time.perf_counter()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        # override_dirname names the points' folders (hydra.sweep.subdir)
        if config.hydra.job.override_dirname == "":
            stage, seconds = Stage(config.stage), time.perf_counter() - self.started
            print(summary_line(stage.value, sweep_dir, own_report(sweep_dir, stage), seconds))
            return
        reports = sorted(sweep_dir.glob("*/report.json"))
        print(f"pdiff: {len(reports)} reports under {sweep_dir}")
        for path in reports:
            report = json.loads(path.read_text())
            generated, original = report["generated"], report["original"]
            print(
                f"  {path.parent / 'report.md'}: generated best/mean "
                f"{generated['best']:.2f}/{generated['mean']:.2f}, original best/mean "
                f"{original['best']:.2f}/{original['mean']:.2f}"
            )
        if not reports:
            return
        markdown = write_sweep_summary(sweep_dir)
        points, rows = sweep_table(sweep_dir)
        print(markdown + f"pdiff: sweep table of {len(points)} runs -> {sweep_dir / SWEEP_TABLE}")
        if LoggerName(config.logger.name) is LoggerName.wandb:
            logger = OmegaConf.merge(
                config.logger,
                {
                    "group": config.logger.group or sweep_group(sweep_dir),
                    "run_name": "sweep-summary",
                },
            )
            tracker = Tracker(
                sweep_dir,
                logger,
                {
                    "task": {"name": str(config.task.name)},
                    "generator": {"design": str(config.generator.design)},
                },
            )
            tracker.log_artifacts({}, {"sweep/table": [["figure", "mean", "std", *points], *rows]})
            tracker.close()
