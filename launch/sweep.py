"""Run the pdiff pipeline (or one stage of it) from the Hydra config tree in configs/.

python launch/sweep.py [overrides ...]                                  (here) python
launch/sweep.py -m hydra/launcher=submitit_slurm [overrides ...]  (one SLURM job per sweep point)
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from pdiff.entry import exit_on_error, prepare_argv, register_configs
from pdiff.evaluation.seed_table import sweep_group
from pdiff.pipeline.run import run_pipeline
from pdiff.pipeline.unread import note_unread_overrides

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if (
        hydra_cfg.mode is RunMode.MULTIRUN
    ):  # each sweep point gets its own folder under paths.output_dir
        with open_dict(cfg):
            cfg.paths.output_dir = hydra_cfg.runtime.output_dir
            cfg.logger.group = cfg.logger.group or sweep_group(hydra_cfg.sweep.dir)
            cfg.logger.run_name = cfg.logger.run_name or hydra_cfg.job.override_dirname or None
    with exit_on_error():
        note_unread_overrides(cfg, list(hydra_cfg.overrides.task))
        run_pipeline(cfg)


if __name__ == "__main__":
    sys.argv = prepare_argv(sys.argv)
    main()
