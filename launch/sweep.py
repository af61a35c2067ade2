"""Run the pdiff pipeline (or one stage of it) from the Hydra config tree in configs/."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from pdiff.config import register_configs, whole_node_overrides
from pdiff.errors import ConfigError, StorageError, ZooError
from pdiff.evaluation.seed_table import sweep_group
from pdiff.generators.registry import warn_unread_overrides
from pdiff.pipeline.output_dir import check_output_dir_overrides
from pdiff.pipeline.run import run_pipeline
from pdiff.training.distributed import strip_launcher_args

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is RunMode.MULTIRUN:  # each sweep point gets its own folder under paths.output_dir
        with open_dict(cfg):
            cfg.paths.output_dir = hydra_cfg.runtime.output_dir
            cfg.logger.group = cfg.logger.group or sweep_group(hydra_cfg.sweep.dir)
            cfg.logger.run_name = cfg.logger.run_name or hydra_cfg.job.override_dirname or None
    try:
        warn_unread_overrides(cfg, list(hydra_cfg.overrides.task))
        run_pipeline(cfg)
    except (ConfigError, ZooError, StorageError) as error:
        sys.exit(f"pdiff: error: {error}")


if __name__ == "__main__":
    args = strip_launcher_args(sys.argv)  # the deepspeed launcher adds --local_rank=N; Hydra would refuse it
    sys.argv = [args[0], *whole_node_overrides(args[1:])]  # task.net={...} replaces the network node
    try:
        check_output_dir_overrides(sys.argv[1:])  # Hydra makes the run folder before main
    except ConfigError as error:
        sys.exit(f"pdiff: error: {error}")
    main()
