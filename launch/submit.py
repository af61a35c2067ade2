"""Submit the pdiff pipeline to SLURM as a chain of dependent jobs; `--wait` follows it to the
report.

python launch/submit.py [overrides ...] [--wait]      (--wait is cluster.wait=true)
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pdiff.cluster.chain import submit_pipeline
from pdiff.entry import exit_on_error, prepare_argv, register_configs
from pdiff.pipeline.unread import note_unread_overrides

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    with exit_on_error():
        note_unread_overrides(cfg, list(HydraConfig.get().overrides.task))
        sys.exit(submit_pipeline(cfg))


if __name__ == "__main__":
    sys.argv = prepare_argv(sys.argv, flags={"--wait": "cluster.wait=true"})
    main()
