"""Run the pdiff pipeline (or one stage of it) from the Hydra config tree in configs/."""

import sys

import hydra
from omegaconf import DictConfig

from pdiff.config import ConfigError, register_configs
from pdiff.pipeline import run_pipeline
from pdiff.zoo import ZooError

register_configs()


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_pipeline(cfg)
    except (ConfigError, ZooError) as error:
        sys.exit(f"pdiff: error: {error}")


if __name__ == "__main__":
    main()
