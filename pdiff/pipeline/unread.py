"""The command-line overrides a run never reads, named once: what the design reads and what the data
source reads are each declared where they live (Generator.reads/uses, datasets.SOURCE_SETTINGS);
this is where they meet.

A run warns rather than refuses, since a multirun over tasks or designs shares its overrides; the
list is kept in `ignored_overrides` of the config and goes into the report. Only overrides are
listed, never settings left at their defaults.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, open_dict

from pdiff.config import DataName, FamilyName
from pdiff.config.command_line import override_key
from pdiff.data.datasets import unread_data_settings
from pdiff.generators.registry import design_of, unread_groups

log = logging.getLogger(__name__)
FAMILY_ONLY = ("generator.descriptor_map",)  # generator settings only a zoo of many tasks reads


def unread_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Each override of `overrides` this run never reads, with why: 'data.mnist1d.seed=7
    (data.mnist1d is read only when data.name is mnist1d; this run has data.name=digits)'."""
    groups = unread_groups(cfg)
    one_task = FamilyName(cfg.task.family.name) is FamilyName.none
    name = DataName(cfg.data.name) if not isinstance(cfg.data.name, DataName) else cfg.data.name
    data = unread_data_settings(name)
    ignored = []
    for override in overrides:
        key = override_key(override)
        if key.split(".")[0] in groups:
            ignored.append(
                f"{override} (generator={design_of(cfg).design} never reads {key.split('.')[0]})"
            )
            continue
        if one_task and key in FAMILY_ONLY:
            ignored.append(
                f"{override} (read only by a zoo of many tasks; this run has task.family.name=none)"
            )
            continue
        setting = next((each for each in data if key == each or key.startswith(f"{each}.")), None)
        if setting is not None:
            ignored.append(
                f"{override} ({setting} is read only when data.name is "
                f"{' or '.join(data[setting])}; "
                f"this run has data.name={name.value})"
            )
    return ignored


def note_unread_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Warn about the overrides this run never reads and keep them in cfg.ignored_overrides (for the
    report)."""
    ignored = unread_overrides(cfg, overrides)
    for line in ignored:
        log.warning("ignored: %s", line)
    with open_dict(cfg):
        cfg.ignored_overrides = ignored
    return ignored
