"""What README.md and docs/*.md tell a user to type works: every override in their tables and every
override in their `launch/sweep.py` / `launch/submit.py` commands composes with the real config tree
and passes the checks a run makes before any work (pdiff.config.validate and the design's own);
every documented default is the composed value; the config-group table lists exactly the options in
configs/."""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig, OmegaConf

from pdiff.config import validate
from pdiff.generators import design_class
from tests.helpers.configs import CONFIGS, REPO, compose_config

README = REPO / "README.md"
DOCS = (README, *sorted((REPO / "docs").glob("*.md")))
GROUP_TABLE = REPO / "docs" / "configuration.md"  # the config-group table lives here
COMMANDS = ("launch/sweep.py", "launch/submit.py")

# An override that only exists for (or only works with) one design composes with that design's
# generator, unless its row names a generator itself.
NEEDS = {
    "generator.pca_components": ["generator=flow"],
    "generator.condition": ["generator=flow"],
    "generator.condition_dropout": ["generator=flow"],
    "generator.optim": ["generator=flow"],
    "generator.cadence": ["generator=flow"],
    "generator.ema_decay": ["generator=flow"],
    "sampler.temperature": ["generator=flow"],
    "generate.target_acc": ["generator=flow_conditioned"],
    "ae.token_": ["generator=token"],
    "ae.code_components": ["generator=token"],
    "denoiser.code": ["generator=token"],
    "ae.embed_dim": ["generator=token"],
    "denoiser.window": ["generator=token"],
    "denoiser.heads": ["generator=token"],
}
# A section whose tables all belong to one design (its heading, without the leading #s).
SECTION_NEEDS = {
    "Which designs beat which baselines (`task=mnist1d_mlp`, 3 seeds)": ["generator=flow"],
    "Choosing the settings": ["generator=token"],
}
# Placeholders the tables use for a value the user chooses, and a value that stands for it here.
PLACEHOLDERS = {
    "task.collect.runs=R": "task.collect.runs=10",
    "generator.pca_components=k": "generator.pca_components=16",
}
MISSING_KEY = object()


@dataclass(frozen=True)
class Case:
    """One thing to compose: where the docs say it, the overrides, and the documented value of a
    bare key."""

    where: str  # e.g. README.md:57
    overrides: tuple[str, ...]
    key: str | None = None  # a key-table row: this key must compose to `default`
    default: str | None = None

    def __str__(self) -> str:
        documented = f" -> {self.key}={self.default or '?'}" if self.key else ""
        return f"{self.where} {' '.join(self.overrides)}{documented}"


def _cells(line: str) -> list[str]:
    """A markdown table row's cells (an escaped \\| stays inside its cell, as a plain |)."""
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _merged(*groups: list[str]) -> tuple[str, ...]:
    """Overrides in order, a later one replacing an earlier one of the same key (Hydra refuses a key
    twice)."""
    merged: dict[str, str] = {}
    for group in groups:
        for override in group:
            merged.pop(_key(override), None)
            merged[_key(override)] = override
    return tuple(merged.values())


def _needs(overrides: list[str]) -> list[str]:
    return [
        extra
        for override in overrides
        for prefix, extras in NEEDS.items()
        if _key(override).startswith(prefix)
        for extra in extras
    ]


def _alternatives(override: str, separator: str) -> list[str]:
    """`key=a|b` (or a multirun's `key=a,b`) as one override per value; a list or dict value stays
    whole."""
    key, _, value = override.partition("=")
    if value[:1] in "[{'\"":
        return [override]
    return [f"{key}={each}" for each in value.split(separator)]


def _first_of_sweep(override: str) -> str:
    """A multirun's `key=a,b,c` as `key=a` (every point of a sweep has the same type)."""
    return _alternatives(override, ",")[0]


def _expanded(overrides: list[str]) -> list[list[str]]:
    """Every value of every alternative once: the first values together, then each other value in
    their place."""
    options = [_alternatives(PLACEHOLDERS.get(o, o), "|") for o in overrides]
    first = [values[0] for values in options]
    cases = [first]
    for index, values in enumerate(options):
        cases += [first[:index] + [value] + first[index + 1 :] for value in values[1:]]
    return cases


def _spans(cell: str) -> list[list[str]]:
    """The overrides of each `code span` of a cell (a span may hold several, and quotes, as a shell
    would)."""
    return [
        [token for token in shlex.split(span) if "=" in token]
        for span in re.findall(r"`([^`]+)`", cell)
    ]


def table_cases(path: Path) -> list[Case]:
    """Every override in the first column of a table (and in the other columns of an `override |
    meaning` table, each on the row's first override); a `key | default` table's keys with their
    defaults.

    A row's code spans build on each other (`sampler=ddim` (`sampler.steps=60 sampler.eta=0`)); a
    later span with the same key is an alternative (`ae=pdiff_v1` / `ae=pdiff_v2`), and so is each
    value of `key=a|b`.
    """
    cases, section, header = [], "", None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [cell.lower() for cell in cells]
            continue
        if set(line) <= set("|-: "):
            continue
        where, context = f"{path.relative_to(REPO)}:{number}", SECTION_NEEDS.get(section, [])
        if header[:2] == ["key", "default"]:
            for span in re.findall(r"`([^`]+)`", cells[0]):
                if "=" in span:
                    cases.append(Case(where, _merged(context, _needs([span]), [span])))
                else:
                    cases.append(
                        Case(where, _merged(context, _needs([span])), key=span, default=cells[1])
                    )
            continue
        spans = [span for span in _spans(cells[0]) if span]
        built: list[str] = []
        for overrides in spans:
            for expanded in _expanded(overrides):
                cases.append(
                    Case(where, _merged(context, _needs(built + expanded), built, expanded))
                )
            built = list(_merged(built, _expanded(overrides)[0]))
        if (
            header[0] == "override" and spans
        ):  # the meaning column's overrides, each on the row's first one
            first = _expanded(spans[0])[0]
            for overrides in (span for cell in cells[1:] for span in _spans(cell) if span):
                for expanded in _expanded(overrides):
                    cases.append(
                        Case(where, _merged(context, _needs(first + expanded), first, expanded))
                    )
    return cases


def command_cases(path: Path) -> list[Case]:
    """The overrides of every launch/sweep.py and launch/submit.py command in the file's code
    blocks."""
    cases, in_code, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            continue
        start = start if pending else number
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        command, pending = pending, ""
        script = next((s for s in COMMANDS if s in command), None)
        if script is None:
            continue
        words = shlex.split(command.split(script, 1)[1], comments=True)
        multirun = "-m" in words or "--multirun" in words
        overrides = [word.strip("[]") if word.startswith("[") else word for word in words]
        overrides = [
            _first_of_sweep(word) if multirun else word
            for word in overrides
            if "=" in word and not word.startswith("-")
        ]
        for expanded in _expanded(overrides):
            cases.append(
                Case(f"{path.relative_to(REPO)}:{start}", _merged(_needs(expanded), expanded))
            )
    return cases


CASES = [case for path in DOCS for case in table_cases(path) + command_cases(path)]


@functools.cache
def _checked(overrides: tuple[str, ...]) -> DictConfig | Exception:
    """The composed and checked config, or what refused it (many rows share their overrides:
    composed once)."""
    try:
        cfg = compose_config(list(overrides))
        validate(cfg)
        design_class(cfg)
    except Exception as error:  # noqa: BLE001 (whatever refuses it, the test names the line)
        return error
    return cfg


@pytest.mark.parametrize("case", CASES, ids=str)
def test_documented_override_composes(case: Case) -> None:
    cfg = _checked(case.overrides)
    if isinstance(cfg, Exception):
        pytest.fail(
            f"{case.where}: `{' '.join(case.overrides)}` does not compose: {type(cfg).__name__}: {cfg}"
        )
    if case.key is None:
        return
    value = OmegaConf.select(cfg, case.key, default=MISSING_KEY)
    assert value is not MISSING_KEY, (
        f"{case.where}: `{case.key}` is not a key of the config (with {case.overrides})"
    )
    value = (
        OmegaConf.to_container(value)
        if OmegaConf.is_config(value)
        else getattr(value, "value", value)
    )
    if case.default:
        try:
            documented = yaml.safe_load(case.default)
        except yaml.YAMLError as error:
            raise AssertionError(
                f"{case.where}: the default of `{case.key}` is not a value: {case.default!r}"
            ) from error
        assert documented == value, (
            f"{case.where}: `{case.key}` is documented as {case.default!r} but composes to "
            f"{value!r} (with {' '.join(case.overrides) or 'the defaults'})"
        )


def test_docs_have_overrides() -> None:
    """The parser finds what it checks: a parser that finds nothing would pass every README."""
    assert len(CASES) >= 60, [str(case) for case in CASES]
    assert sum(case.key is not None for case in CASES) >= 10


def _group_table() -> list[tuple[int, str, list[str]]]:
    """The config-group table: (line, group, the options it lists, parenthesised remarks left out)."""
    rows, inside = [], False
    for number, line in enumerate(GROUP_TABLE.read_text().splitlines(), 1):
        if line.startswith("| group | options |"):
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if inside and not set(line) <= set("|-: "):
            group, options = _cells(line)[:2]
            while re.search(r"\([^()]*\)", options):
                options = re.sub(r"\([^()]*\)", "", options)
            rows.append(
                (
                    number,
                    group.strip("`"),
                    [o.strip() for o in re.split(r"[,;]", options) if o.strip()],
                )
            )
    return rows


def test_group_table_lists_every_option() -> None:
    """Exactly the options on disk, for every group there (tests/unit/test_config.py composes each
    option)."""
    rows = _group_table()
    assert rows, f"{GROUP_TABLE.name} has no `| group | options |` table"
    for number, group, options in rows:
        on_disk = sorted(path.stem for path in (CONFIGS / group).glob("*.yaml"))
        assert sorted(options) == on_disk, (
            f"{GROUP_TABLE.name}:{number}: group `{group}` lists {sorted(options)}, "
            f"configs/{group}/ has {on_disk}"
        )
    documented = {group for _, group, _ in rows}
    groups = {path.name for path in CONFIGS.iterdir() if path.is_dir() and any(path.glob("*.yaml"))}
    assert groups - {"hydra", "local"} <= documented, (
        f"{GROUP_TABLE.name}'s config-group table leaves out {sorted(groups - documented)}"
    )
