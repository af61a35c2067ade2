"""The import contract: the layers of pdiff/ import only downwards, configuration is a leaf, and
only the cluster code (and launch/) knows about SLURM's submitit.

Every import of every module is read with ast, function-level imports included, so a lazy import
cannot hide a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.configs import REPO

# Lower layers never import higher ones; a unit may import its own layer. Flat modules are units of
# their own.
LAYERS = [
    ("errors",),
    ("config", "seeds", "atomic", "allocator", "resources"),
    ("tracking", "diffusion", "data"),
    ("training",),
    ("zoo",),
    ("evaluation",),
    ("heldout",),
    ("generators",),
    ("pipeline",),
    ("cluster",),
    ("entry",),
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
ML_UNITS = ("data", "zoo", "diffusion", "generators", "training", "evaluation", "heldout")
Rule = Callable[[str, str], "str | None"]


def unit_of(module: str) -> str:
    """`pdiff.zoo.store` -> `zoo`; `pdiff.errors` -> `errors`; the package itself -> ``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Every module `path` imports (relative imports resolved), at any depth of the file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if base == "pdiff")
    return found


def violations(root: Path, rule: Rule) -> list[str]:
    """'file imports module: why' for every import of a pdiff module under `root`/pdiff that `rule`
    refuses."""
    out = []
    for path in sorted((root / "pdiff").rglob("*.py")):
        module = module_name(path, root)
        for imported in sorted(m for m in imports_of(path, root) if m.startswith("pdiff.")):
            problem = rule(module, imported)
            if problem:
                out.append(f"{path.relative_to(root)} imports {imported}: {problem}")
    return out


def downwards(module: str, imported: str) -> str | None:
    own, other = unit_of(module), unit_of(imported)
    if own and RANK[other] > RANK[own]:
        return f"{own} (layer {RANK[own]}) may not import {other} (layer {RANK[other]})"
    return None


def config_is_a_leaf(module: str, imported: str) -> str | None:
    if unit_of(module) in ("config", "errors") and unit_of(imported) not in ("config", "errors"):
        return "configuration imports nothing of pdiff but pdiff.errors"
    if unit_of(module) == "errors":
        return "pdiff.errors imports nothing"
    return None


def maths_at_the_bottom(module: str, imported: str) -> str | None:
    if unit_of(module) == "diffusion" and unit_of(imported) not in ("diffusion", "errors", "seeds"):
        return "the diffusion maths imports nothing above it"
    return None


def evaluation_apart_from_generators(module: str, imported: str) -> str | None:
    if unit_of(module) == "evaluation" and unit_of(imported) == "generators":
        return "evaluation measures models, whoever made them"
    return None


def ml_apart_from_wiring(module: str, imported: str) -> str | None:
    if unit_of(module) in ML_UNITS and unit_of(imported) in ("cluster", "pipeline", "entry"):
        return "ML code is apart from the cluster and pipeline wiring"
    return None


RULES = [
    downwards,
    config_is_a_leaf,
    maths_at_the_bottom,
    evaluation_apart_from_generators,
    ml_apart_from_wiring,
]


def test_every_unit_of_pdiff_has_a_layer():
    units = {unit_of(module_name(path, REPO)) for path in (REPO / "pdiff").rglob("*.py")} - {""}
    assert units - set(RANK) == set()


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_pdiff_keeps_the_contract(rule):
    assert violations(REPO, rule) == []


@pytest.mark.parametrize("root", ["pdiff", "launch", "benchmarks"])
def test_only_the_cluster_code_and_launch_import_submitit(root):
    for path in sorted((REPO / root).rglob("*.py")):
        uses = any(
            m == "submitit" or m.startswith(("submitit.", "hydra_plugins.hydra_submitit"))
            for m in imports_of(path, REPO)
        )
        allowed = root != "pdiff" or unit_of(module_name(path, REPO)) == "cluster"
        assert allowed or not uses, (
            f"{path.relative_to(REPO)} imports submitit outside pdiff/cluster/"
        )


@pytest.mark.parametrize(
    "rule, source, file",
    [
        (
            config_is_a_leaf,
            "def f():\n    from pdiff.generators import DESIGNS\n",
            "pdiff/config/schema.py",
        ),
        (config_is_a_leaf, "from ..zoo import store\n", "pdiff/config/validate.py"),
        (downwards, "import pdiff.pipeline.run\n", "pdiff/zoo/collect.py"),
        (
            downwards,
            "from pdiff.heldout.report import heldout_summary_line\n",
            "pdiff/evaluation/report.py",
        ),
        (
            downwards,
            "def f():\n    from ..heldout import evaluate\n",
            "pdiff/evaluation/verdict.py",
        ),
        (
            maths_at_the_bottom,
            "from pdiff.config import SamplerName\n",
            "pdiff/diffusion/gaussian.py",
        ),
        (
            evaluation_apart_from_generators,
            "from pdiff import generators\n",
            "pdiff/evaluation/report.py",
        ),
        (ml_apart_from_wiring, "from pdiff.cluster.jobs import Job\n", "pdiff/training/fit.py"),
    ],
)
def test_the_contract_catches_each_kind_of_break(tmp_path, rule, source, file):
    """Each rule, on a copy of one module with one import added (a lazy or relative one included),
    reports it."""
    planted = tmp_path / file
    planted.parent.mkdir(parents=True)
    planted.write_text(source)
    found = violations(tmp_path, rule)
    assert len(found) == 1 and found[0].startswith(file), found


def test_the_held_out_tasks_sit_between_evaluation_and_the_pipeline():
    """Evaluation is generic: the held-out tasks may use its intervals and verdict, never the other
    way round, and the pipeline dispatches between their reports."""
    assert RANK["evaluation"] < RANK["heldout"] < RANK["pipeline"]
