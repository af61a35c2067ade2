"""Stage folders: what config each was made from, and skip-if-done without ever overwriting costly work.

Each stage folder holds `inputs.json`, the part of the config its outputs depend on (a stage's inputs
include its predecessors'; the train stage's are the generator node and the groups its design reads). A folder
of costly work (the zoo, the generator) made from other inputs is refused; a cheap one (generated, eval) is made
again, after its old contents are moved to DIR/superseded/ (nothing is deleted).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import Stage, to_container
from pdiff.data.datasets import TEST_SPLIT_KEYS, split_fingerprint
from pdiff.errors import ConfigError
from pdiff.generators.registry import design_of

log = logging.getLogger(__name__)
INPUTS_FILE = "inputs.json"
DESIGN_KEY = "generator.design"
SUPERSEDED_DIR = "superseded"


FAMILY_EVALUATION_KEYS = ("eval_split", "k_nearest")  # task.family settings only the evaluate stage reads


def stage_groups(cfg: DictConfig) -> dict[Stage, tuple[str, ...]]:
    """The config groups each stage's own outputs depend on (train: the generator node + what its design reads).
    The test split's settings of `data` belong to evaluate alone (own_inputs)."""
    return {Stage.collect: ("task", "data", "seed"),
            Stage.train: ("generator", *design_of(cfg).reads),
            Stage.generate: ("generate", "sampler"),
            Stage.evaluate: ("evaluate",)}


def own_inputs(cfg: DictConfig, stage: Stage, full: dict) -> dict:
    """What `stage` itself reads: its groups; for collect, `data` without the test split's settings and with the
    training arrays' digest; for evaluate, also the test split's settings and the test arrays' digest (a new
    test set re-evaluates without touching zoo/, generator/ or generated/); task.family's scoring settings are
    evaluate's too."""
    own = {key: full[key] for key in stage_groups(cfg)[stage]}
    if stage is Stage.collect:
        own["task"] = copy.deepcopy(own["task"])
        for key in FAMILY_EVALUATION_KEYS:  # how held-out tasks are scored is evaluate's
            own["task"]["family"].pop(key, None)
        data = copy.deepcopy(own["data"])
        for key in TEST_SPLIT_KEYS:
            group, _, name = key.partition(".")
            data[group].pop(name)
        own["data"] = {**data, "train_sha256": split_fingerprint(cfg.data, "train")}
    if stage is Stage.evaluate:
        test = {key: full["data"][key.partition(".")[0]][key.partition(".")[2]] for key in TEST_SPLIT_KEYS}
        own["test_data"] = {**test, "sha256": split_fingerprint(cfg.data, "test")}
        own["family_evaluation"] = {key: full["task"]["family"][key] for key in FAMILY_EVALUATION_KEYS}
    return own


def stage_inputs(cfg: DictConfig, stage: Stage) -> dict:
    """The config that a stage's outputs depend on (each stage includes its predecessors')."""
    full, stages = to_container(cfg), list(stage_groups(cfg))
    return {key: value for each in stages[:stages.index(stage) + 1]
            for key, value in own_inputs(cfg, each, full).items()}


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def changed_inputs(directory: Path, inputs: dict) -> list[str]:
    """'key: old -> new' for each config key that differs from what `directory` was made with; a folder holding
    files without its inputs.json was made with an unknown config. When the design changed, only that is named
    (the groups each design reads follow from it)."""
    path = directory / INPUTS_FILE
    if not path.is_file():
        # hidden entries are other ranks' or array tasks' writes in flight (atomic temp files), not outputs
        held = sorted(entry.name for entry in directory.iterdir() if not entry.name.startswith(".")
                      ) if directory.is_dir() else []
        return [f"{INPUTS_FILE}: missing, yet the folder holds {', '.join(held[:3])}: made with an unknown config"
                ] if held else []
    old, new = _flat(atomic.read_checked_json(path)), _flat(inputs)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]
    return [line for line in changed if line.startswith(f"{DESIGN_KEY}:")] or changed


def refuse_changed(directory: Path, inputs: dict) -> None:
    """ConfigError if a folder of costly work was made with another config; it is never overwritten."""
    changed = changed_inputs(directory, inputs)
    if changed:
        raise ConfigError(f"{directory} was made with another config ({', '.join(changed[:6])}); it is kept as it "
                          "is. Use a new paths.output_dir, or the config that made it")


def claim_stage_dir(directory: Path, inputs: dict, keep_on_change: bool) -> None:
    """Record what a stage folder is made from; if it was made from other inputs, move its contents aside first.

    A folder holding costly work (keep_on_change) made from other inputs is never touched: ConfigError. A cheap
    one's old contents go to DIR/superseded/<folder>-<time>/, with a warning naming what changed.
    """
    if keep_on_change:
        refuse_changed(directory, inputs)
    changed = changed_inputs(directory, inputs)
    if changed:
        superseded = directory.parent / SUPERSEDED_DIR
        superseded.mkdir(exist_ok=True)
        archive = Path(tempfile.mkdtemp(prefix=f"{directory.name}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=superseded))
        for stale in directory.iterdir():
            stale.rename(archive / stale.name)
        log.warning("%s was made with another config (%s): made again; the old files are in %s", directory,
                    ", ".join(changed[:6]), archive)
    if not (directory / INPUTS_FILE).is_file() or changed:
        atomic.write_checked_json(directory / INPUTS_FILE, inputs)
