"""MNIST-1D end to end (offline, with networking absent) and whole-model zoos from several aligned
runs."""

import json
import os
import shutil
import subprocess

import pytest
import torch

from pdiff import atomic
from pdiff.data.datasets import load_dataset
from pdiff.data.tasknets import build_task_net
from pdiff.errors import ConfigError
from pdiff.generators import design_class
from pdiff.pipeline.run import run_pipeline
from pdiff.zoo.params import select_parameters
from pdiff.zoo.store import ParamZoo, run_path
from tests.helpers.configs import TINY, compose_config
from tests.helpers.plots import assert_training_logged_and_plotted
from tests.helpers.runs import ok, run_sweep

pytestmark = pytest.mark.slow
FULL_SMOKE = "experiment=[mnist1d_full,smoke]"


def _without_network() -> list[str]:
    """A command prefix that runs the child in a new network namespace (only loopback, and that
    down).

    Where `unshare --net` is missing or not permitted the test skips; with PDIFF_REQUIRE_NETNS=1
    (make test) it fails instead."""
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "--net", "true"]).returncode != 0
    ):
        reason = "`unshare --net` is missing or not permitted here (needs root or user namespaces)"
        if os.environ.get("PDIFF_REQUIRE_NETNS") == "1":
            pytest.fail(f"PDIFF_REQUIRE_NETNS=1 but {reason}")
        pytest.skip(reason)
    return ["unshare", "--net"]


@pytest.mark.parametrize("task", ["mnist1d_mlp", "mnist1d_cnn"])
def test_mnist1d_tasks_run_end_to_end_with_networking_absent(task, tmp_path):
    prefix = _without_network()
    probe = subprocess.run(
        [*prefix, "python3", "-c", "import socket; socket.create_connection(('1.1.1.1', 80), 2)"],
        capture_output=True,
        text=True,
    )
    assert (
        probe.returncode != 0 and "unreachable" in probe.stderr.lower()
    )  # really no network in there
    out, root = tmp_path / "run", tmp_path / "data"
    args = [
        "experiment=smoke",
        f"task={task}",
        f"data.root={root}",
        "data.mnist1d.val_samples=500",
        "data.mnist1d.test_samples=2000",
        *TINY,
        f"paths.output_dir={out}",
    ]
    ok(run_sweep(args, prefix=prefix))
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == task and report["original"]["n"] == 10
    assert (
        report["memorization"]["originals"]["n"] == 10
        and len(json.loads((out / "zoo" / "zoo.json").read_text())["checkpoint_run"]) == 10
    )
    assert_training_logged_and_plotted(out, design_class(compose_config(args)).phases)
    records = {
        record["split"]: record
        for record in (json.loads(path.read_text()) for path in (root / "mnist1d").glob("*.json"))
    }
    assert records["train"]["args"]["seed"] == 42 and records["train"]["sizes"]["x"] == [4000, 40]
    assert records["val"]["sizes"]["x"] == [500, 40] and records["test"]["sizes"]["x"] == [2000, 40]
    assert report["n_test"] == 2000


def test_whole_model_zoo_from_four_aligned_runs_computes_what_the_runs_computed(tmp_path):
    out = tmp_path / "run"
    args = [FULL_SMOKE, "task.collect.runs=4", f"paths.output_dir={out}"]
    ok(run_sweep([*args, "stage=collect"]))
    zoo = ParamZoo.load(out / "zoo")
    meta = zoo.meta
    assert meta["runs"] == 4 and meta["run_sizes"] == [5, 5, 5, 5] and meta["aligned"]
    assert (
        meta["checkpoint_run"] == [r for r in range(4) for _ in range(5)]
        and len(meta["checkpoint_step"]) == 20
    )
    records = meta["run_records"]
    assert (
        len({r["init_seed"] for r in records}) == 4
        and len({r["collect_seed"] for r in records}) == 4
    )
    assert all(
        r["base_val_acc"] is not None for r in records[1:]
    )  # runs 1-3 trained their own base models
    assert all(a["l2_after"] < a["l2_before"] for a in meta["alignment"][1:])
    cfg = compose_config(args)
    data = load_dataset(cfg.data)
    model = build_task_net(cfg.task.net, data.input_shape, data.num_classes).eval()
    spec = select_parameters(model, ["*"])
    for index in range(1, 4):
        unaligned = atomic.read_safetensors(run_path(out / "zoo", index, 4))["params"]
        aligned = zoo.vectors[5 * index : 5 * index + 5]
        assert not torch.equal(unaligned, aligned)
        for before, after in zip(unaligned, aligned):
            logits = []
            for vector in (before, after):
                state = {name: value[0] for name, value in spec.unflatten(vector[None]).items()}
                logits.append(torch.func.functional_call(model, state, (data.x_test,)))
            assert torch.allclose(logits[0], logits[1], atol=1e-4)


def test_runs_of_a_whole_batchnorm_network_and_align_of_a_subset_are_refused(tmp_path):
    """Refused before any work (the checks run_pipeline makes first; the smoke run shows the
    launcher's errors)."""
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"task.collect.runs=2 .* running statistics"):
        run_pipeline(
            compose_config(
                [
                    "experiment=smoke",
                    "task=mnist1d_mlp",
                    "task.param.layers=[*]",
                    "task.collect.runs=2",
                    f"paths.output_dir={out}",
                ]
            )
        )
    with pytest.raises(ConfigError, match=r"task.collect.align=true needs a whole-model zoo"):
        run_pipeline(
            compose_config(
                [
                    "experiment=smoke",
                    "task=mnist1d_mlp",
                    "task.collect.align=true",
                    f"paths.output_dir={out}",
                ]
            )
        )
    assert not (out / "zoo").exists()


def test_a_zoo_without_spread_says_so_at_the_top_of_its_report(tmp_path):
    """One trajectory at a vanishing collection lr: K copies of one model. Every family ties, and
    the report opens by saying that this zoo cannot tell a generator from a copy, naming the knobs.
    """
    out = tmp_path / "run"
    run_pipeline(
        compose_config(
            [
                "task=mnist1d_mlp",
                "task.collect.lr=1e-7",
                "task.collect.runs=1",
                "experiment=smoke",
                f"data.root={tmp_path / 'data'}",
                "data.mnist1d.val_samples=500",
                "data.mnist1d.test_samples=2000",
                *TINY,
                f"paths.output_dir={out}",
            ]
        )
    )
    check = json.loads((out / "report.json").read_text())["zoo_check"]
    assert check["discriminates"] is False and check["accuracy_std"] < check["resolution"]
    opening = (out / "report.md").read_text().splitlines()[2]
    assert (
        opening.startswith("**This zoo cannot tell a generator from a copy.**")
        and "`task.collect.lr`" in opening
    )
