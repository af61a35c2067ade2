"""What every entry point does before and around its one library call (launch/sweep.py,
launch/submit.py).

The one place that registers the configs and the designs' schemas with Hydra; the command-line
rewrites Hydra needs; and the exit with one line for every failure pdiff explains (PdiffError),
before any work where it can.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from pdiff.config import Config, whole_node_overrides
from pdiff.config.overrides import sweep_dirname
from pdiff.errors import ChainFailed, ConfigError, PdiffError
from pdiff.generators import DESIGNS
from pdiff.pipeline.output_dir import check_output_dir_overrides
from pdiff.training.distributed import strip_launcher_args

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
    args = strip_launcher_args(argv)
    for flag, override in (flags or {}).items():
        if flag in args:
            args = [arg for arg in args if arg != flag] + [override]
    with exit_on_error():
        _check_parsable(args[1:])
        check_output_dir_overrides(args[1:])
    return [args[0], *whole_node_overrides(args[1:])]


def _check_parsable(arguments: list[str]) -> None:
    """ConfigError naming an override Hydra's parser refuses, with the quoting that fixes the usual
    cause."""
    parser = OverridesParser.create()
    for argument in arguments:
        if argument.startswith("-") or "=" not in argument:
            continue
        try:
            parser.parse_override(argument)
        except HydraException as error:
            key, _, value = argument.partition("=")
            detail = str(error).strip().splitlines()[0]
            raise ConfigError(
                f"the override {argument!r} cannot be parsed ({detail}); a value holding non-ASCII "
                "letters, newlines or special characters (=, quotes, brackets) must be quoted: "
                f"'{key}=\"{value}\"'"
            ) from None


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
