"""Stage folders: what config each was made from, and skip-if-done without ever overwriting costly
work.

Each stage folder holds `inputs.json`, the part of the config its outputs depend on (a stage's
inputs include its predecessors'; the train stage's are the generator node and the groups its design
reads). The file a stage writes last (zoo.json, generator.json, generated.json) records them too, so
a folder whose inputs.json was lost still knows its config. A folder of costly work (the zoo, the
generator) made from other inputs is refused; a cheap one (generated, eval) is made again, after its
old contents are moved to DIR/superseded/ (nothing is deleted).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import DataName, Stage, to_container
from pdiff.data.datasets import TEST_SPLIT_KEYS, unread_data_settings
from pdiff.data.npz import split_fingerprint
from pdiff.errors import ConfigError, ZooError
from pdiff.generators.registry import design_of

log = logging.getLogger(__name__)
INPUTS_FILE = "inputs.json"
DESIGN_KEY = "generator.design"
SUPERSEDED_DIR = "superseded"
RECORD_KEY = "inputs"  # the key of a stage's last file (RECORD_FILES) that repeats its inputs.json
RECORD_FILES = (
    "zoo.json",
    "generator.json",
    "generated.json",
)  # ZOO_META, GENERATOR_META, GENERATED_META


# Recorded with each stage's own value, never a reason to refuse or redo a folder: `threads` sets
# the order of the CPU's floating-point reductions, so each stage's outputs depend on the count it
# ran with (its inputs.json says which), yet a zoo collected on 1 thread is the same zoo to a
# generator trained on 4.
PROVENANCE_KEYS = ("threads",)
FAMILY_EVALUATION_KEYS = (
    "eval_split",
    "k_nearest",
    "finetune_steps",
)  # task.family settings only the evaluate stage reads
EVALUATION_DATA_KEYS = (
    *TEST_SPLIT_KEYS,
    "eval_batch_size",
)  # data.* settings only the evaluate stage reads


def stage_groups(cfg: DictConfig) -> dict[Stage, tuple[str, ...]]:
    """The config groups each stage's own outputs depend on (train: the generator node + what its
    design reads). The settings of `data` only evaluation reads belong to evaluate alone
    (own_inputs)."""
    return {
        Stage.collect: ("task", "data", "seed"),
        Stage.train: ("generator", *design_of(cfg).reads),
        Stage.generate: ("generate", "sampler"),
        Stage.evaluate: ("evaluate",),
    }


def _read_data_keys(cfg: DictConfig, keys: tuple[str, ...]) -> list[str]:
    """`keys` (of data.*) less the settings that the data source never reads (data.mnist1d.* of
    digits, ...)."""
    name = cfg.data.name if isinstance(cfg.data.name, DataName) else DataName(cfg.data.name)
    unread = [setting.removeprefix("data.") for setting in unread_data_settings(name)]
    return [
        key for key in keys if not any(key == each or key.startswith(f"{each}.") for each in unread)
    ]


def _pop(tree: dict, key: str):
    """Remove and return `tree`'s value at the dotted `key`."""
    *parents, leaf = key.split(".")
    for parent in parents:
        tree = tree[parent]
    return tree.pop(leaf)


def own_inputs(cfg: DictConfig, stage: Stage, full: dict) -> dict:
    """What `stage` itself reads: its groups; for collect, the `data` settings its source reads,
    less those only evaluation reads, with the training arrays' digest; for evaluate, those settings
    and the test arrays' digest (a new test set re-evaluates without touching zoo/, generator/ or
    generated/); task.family's scoring settings are evaluate's too."""
    own = {
        key: full[key] for key in (*stage_groups(cfg)[stage], *PROVENANCE_KEYS)
    }  # later stages' win in the merge
    data = copy.deepcopy(full["data"])
    evaluation = {key: _pop(data, key) for key in EVALUATION_DATA_KEYS}
    if stage is Stage.collect:
        own["task"] = copy.deepcopy(own["task"])
        for key in FAMILY_EVALUATION_KEYS:  # how held-out tasks are scored is evaluate's
            own["task"]["family"].pop(key, None)
        source = {key: value for key, value in _flat(data).items() if _read_data_keys(cfg, (key,))}
        own["data"] = {**_nested(source), "train_sha256": split_fingerprint(cfg.data, "train")}
    if stage is Stage.evaluate:
        test = {key: evaluation[key] for key in _read_data_keys(cfg, EVALUATION_DATA_KEYS)}
        own["test_data"] = {**test, "sha256": split_fingerprint(cfg.data, "test")}
        own["family_evaluation"] = {
            key: full["task"]["family"][key] for key in FAMILY_EVALUATION_KEYS
        }
    return own


def stage_inputs(cfg: DictConfig, stage: Stage) -> dict:
    """The config that a stage's outputs depend on (each stage includes its predecessors')."""
    full, stages = to_container(cfg), list(stage_groups(cfg))
    return {
        key: value
        for each in stages[: stages.index(stage) + 1]
        for key, value in own_inputs(cfg, each, full).items()
    }


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def _nested(flat: dict) -> dict:
    """The tree `_flat` made `flat` from."""
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree


def recorded_inputs(directory: Path) -> dict | None:
    """The inputs a finished stage folder's last file (one of RECORD_FILES) records, or None without
    one."""
    path = next((directory / name for name in RECORD_FILES if (directory / name).is_file()), None)
    if path is None:
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ZooError(
            f"{path} is not valid JSON ({error}): it was damaged; restore it, or use a new "
            "paths.output_dir"
        ) from error
    if atomic.JSON_CHECKSUM_KEY in record:
        record = atomic.read_checked_json(path)
    return record.get(RECORD_KEY)


def changed_inputs(directory: Path, inputs: dict) -> list[str]:
    """'key: old -> new' for each config key that differs from what `directory` was made with (its
    inputs.json, or when that is lost, what its last file records); a folder holding files without
    either was made with an unknown config. When the design changed, only that is named (the groups
    each design reads follow from it)."""
    path = directory / INPUTS_FILE
    made_from = atomic.read_checked_json(path) if path.is_file() else recorded_inputs(directory)
    if made_from is None:
        # hidden entries are other ranks' or array tasks' writes in flight (atomic temp files), not
        # outputs
        held = (
            sorted(entry.name for entry in directory.iterdir() if not entry.name.startswith("."))
            if directory.is_dir()
            else []
        )
        return (
            [
                f"{INPUTS_FILE}: missing, yet the folder holds {', '.join(held[:3])}: made with an "
                "unknown config"
            ]
            if held
            else []
        )
    return inputs_diff(made_from, inputs)


def inputs_diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for each config key that differs (PROVENANCE_KEYS aside); only the design
    when it differs."""
    old, new = _flat(old), _flat(new)
    keys = sorted(
        k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in PROVENANCE_KEYS
    )
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]
    return [line for line in changed if line.startswith(f"{DESIGN_KEY}:")] or changed


def refuse_changed(directory: Path, inputs: dict) -> None:
    """ConfigError if a folder of costly work was made with another config; it is never
    overwritten."""
    changed = changed_inputs(directory, inputs)
    if changed:
        raise ConfigError(
            f"{directory} was made with another config ({', '.join(changed[:6])}); it is kept as "
            "it is. Use a new paths.output_dir, or the config that made it"
        )


def supersede(directory: Path, why: str, companions: tuple[Path, ...] = ()) -> None:
    """Move `directory`'s contents, and `companions` (its outputs beside it), to
    DIR/superseded/<folder>-<time>/, with a warning saying `why`; nothing when there is nothing to
    move."""
    stale = [
        *(directory.iterdir() if directory.is_dir() else ()),
        *(path for path in companions if path.exists()),
    ]
    if not stale:
        return
    superseded = directory.parent / SUPERSEDED_DIR
    superseded.mkdir(exist_ok=True)
    archive = Path(
        tempfile.mkdtemp(
            prefix=f"{directory.name}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=superseded
        )
    )
    for path in stale:
        path.rename(archive / path.name)
    log.warning("%s %s: made again; the old files are in %s", directory, why, archive)


def claim_stage_dir(
    directory: Path, inputs: dict, keep_on_change: bool, companions: tuple[Path, ...] = ()
) -> None:
    """Record what a stage folder is made from; if it was made from other inputs, move its contents
    (and `companions`, its outputs beside it) aside first.

    A folder holding costly work (keep_on_change) made from other inputs is never touched:
    ConfigError. A cheap one's old contents go to DIR/superseded/<folder>-<time>/, with a warning
    naming what changed.
    """
    if keep_on_change:
        refuse_changed(directory, inputs)
    changed = changed_inputs(directory, inputs)
    if changed:
        supersede(directory, f"was made with another config ({', '.join(changed[:6])})", companions)
    if not (directory / INPUTS_FILE).is_file() or changed:
        atomic.write_checked_json(directory / INPUTS_FILE, inputs)
