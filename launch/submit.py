"""Submit the pdiff pipeline to SLURM as a chain of dependent jobs; `--wait` follows it to the report.

    python launch/submit.py [overrides ...] [--wait]      (--wait is cluster.wait=true)
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pdiff.cluster.chain import submit_pipeline
from pdiff.config import register_configs, whole_node_overrides
from pdiff.errors import ChainFailed, ConfigError, StorageError, ZooError
from pdiff.generators.registry import warn_unread_overrides
from pdiff.pipeline.output_dir import check_output_dir_overrides

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        warn_unread_overrides(cfg, list(HydraConfig.get().overrides.task))
        sys.exit(submit_pipeline(cfg))
    except (ConfigError, ZooError, StorageError) as error:
        sys.exit(f"pdiff: error: {error}")
    except ChainFailed as error:
        sys.exit(f"pdiff: FAILED: {error}")


if __name__ == "__main__":
    if "--wait" in sys.argv:
        sys.argv.remove("--wait")
        sys.argv.append("cluster.wait=true")
    sys.argv = [sys.argv[0], *whole_node_overrides(sys.argv[1:])]  # task.net={...} replaces the network node
    try:
        check_output_dir_overrides(sys.argv[1:])  # Hydra makes the run folder before main
    except ConfigError as error:
        sys.exit(f"pdiff: error: {error}")
    main()
