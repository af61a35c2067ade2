"""What every entry point does before and around its one library call (launch/sweep.py,
launch/submit.py).

The one place that registers the configs and the designs' schemas with Hydra; argv made ready for
Hydra (through pdiff.config.command_line, where the command line is read); and the exit with one
line for every failure pdiff explains (PdiffError), before any work where it can.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from pdiff.config import Config
from pdiff.config.command_line import (
    check_parsable,
    flags_as_overrides,
    strip_launcher_args,
    sweep_dirname,
    whole_node_overrides,
)
from pdiff.errors import ChainFailed, PdiffError
from pdiff.generators import DESIGNS
from pdiff.pipeline.output_dir import check_output_dir_overrides

# Hydra names a sweep point's folder in the job, on the node: registered when this module is
# imported, so the job's process (which imports it to run the task function) has it too.
OmegaConf.register_new_resolver("pdiff_sweep_dirname", sweep_dirname, replace=True)
OmegaConf.register_new_resolver(
    "pdiff_product", lambda *factors: math.prod(int(f) for f in factors), replace=True
)
# Hydra's run and sweep folders: paths.output_dir as pdiff reads it (~ is the home folder, never a
# folder named ~)
OmegaConf.register_new_resolver(
    "pdiff_expanduser", lambda path: os.path.expanduser(str(path)), replace=True
)


def register_configs() -> None:
    """Store the root schema and every registered design's schemas in Hydra's ConfigStore, so each
    YAML file is type-checked against its own (idempotent: a design registered later is stored by
    calling it again)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for design in DESIGNS.values():
        for group, schemas in design.schemas.items():
            for name, schema in schemas.items():
                store.store(group=group, name=name, node=schema, package=group)


def prepare_argv(argv: list[str], flags: dict[str, str] | None = None) -> list[str]:
    """argv as Hydra should see it: the DeepSpeed launcher's --local_rank dropped, each of `flags`
    (e.g. --wait) turned into its override, `task.net={...}` replacing the node; exits with one line
    when an override cannot be parsed or paths.output_dir cannot be used (Hydra makes that folder
    before any pdiff code runs)."""
    args = flags_as_overrides(strip_launcher_args(argv), flags or {})
    with exit_on_error():
        check_parsable(args[1:])
        check_output_dir_overrides(args[1:])
    return [args[0], *whole_node_overrides(args[1:])]


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Exit with `pdiff: error: <message>` (or `pdiff: FAILED:` for a failed SLURM job) on a
    PdiffError."""
    try:
        yield
    except ChainFailed as error:
        sys.exit(f"pdiff: FAILED: {error}")
    except PdiffError as error:
        sys.exit(f"pdiff: error: {error}")
