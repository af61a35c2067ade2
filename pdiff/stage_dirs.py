"""Stage folders: what config each was made from, and skip-if-done without ever overwriting costly work.

Each stage folder holds `inputs.json`, the part of the config its outputs depend on (a stage's inputs
include its predecessors'). A folder of costly work (the zoo, the generator) made from other inputs is
refused; a cheap one (generated, eval) is emptied and made again.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import ConfigError, Stage, to_container

INPUTS_FILE = "inputs.json"
_GROUPS = {Stage.collect: ("task", "data", "seed"),
           Stage.train: ("generator", "ae", "denoiser", "diffusion"),
           Stage.generate: ("generate", "sampler"),
           Stage.evaluate: ("evaluate",)}


def stage_inputs(cfg: DictConfig, stage: Stage) -> dict:
    """The config that a stage's outputs depend on (each stage includes its predecessors')."""
    full = to_container(cfg)
    upto = {Stage.collect: 1, Stage.train: 2, Stage.generate: 3, Stage.evaluate: 4}[stage]
    return {key: full[key] for groups in list(_GROUPS.values())[:upto] for key in groups}


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def changed_inputs(directory: Path, inputs: dict) -> list[str]:
    """'key: old -> new' for each config key that differs from what `directory` was made with."""
    path = directory / INPUTS_FILE
    if not path.is_file():
        return []
    old, new = _flat(json.loads(path.read_text())), _flat(inputs)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]


def refuse_changed(directory: Path, inputs: dict) -> None:
    """ConfigError if a folder of costly work was made with another config; it is never overwritten."""
    changed = changed_inputs(directory, inputs)
    if changed:
        raise ConfigError(f"{directory} was made with another config ({', '.join(changed[:6])}); it is kept as it "
                          "is. Use a new paths.output_dir, or the config that made it")


def claim_stage_dir(directory: Path, inputs: dict, keep_on_change: bool) -> None:
    """Record what a stage folder is made from; empty it if it was made from other inputs.

    A folder holding costly work (keep_on_change) made from other inputs is never emptied: ConfigError.
    """
    if keep_on_change:
        refuse_changed(directory, inputs)
    elif changed_inputs(directory, inputs):
        for stale in directory.iterdir():
            stale.unlink()
    if not (directory / INPUTS_FILE).is_file() or changed_inputs(directory, inputs):
        atomic.write_json(directory / INPUTS_FILE, inputs)
