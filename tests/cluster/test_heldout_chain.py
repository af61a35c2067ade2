"""A zoo of many tasks through the SLURM chain: the collection array splits the (task, seed) pairs,
the merged zoo equals one collected in this process bit for bit, and the report scores every
held-out task."""

import json
import subprocess

import pytest

from pdiff.pipeline.run import run_pipeline
from tests.cluster.test_slurm import SMALL, submit, submitted_ids
from tests.e2e.test_unseen_tasks import tiny
from tests.helpers.configs import compose_config
from tests.helpers.runs import ok

pytestmark = pytest.mark.slow


def test_the_chain_collects_tasks_as_an_array_and_reports_every_held_out_task(tmp_path):
    out, reference = tmp_path / "cluster", tmp_path / "in_process"
    cluster = [
        *SMALL[2:],
        *tiny(tmp_path),
    ]  # threads and the cluster's sizes; the experiment is the family's
    result = ok(submit([*cluster, f"paths.output_dir={out}", "--wait"]))
    ids = submitted_ids(result.stdout)
    assert [name for name in ids if name.startswith("collect run")] == [
        "collect run 0",
        "collect run 1",
    ]
    array = ids["collect run 0"].split("_")[0]
    states = subprocess.run(
        ["sacct", "-n", "-X", "-j", array, "-o", "JobID,State", "-P"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(states) == [f"{array}_0|COMPLETED", f"{array}_1|COMPLETED"]
    run_pipeline(
        compose_config(
            [*tiny(tmp_path), "threads=1", "stage=collect", f"paths.output_dir={reference}"]
        )
    )
    assert (out / "zoo" / "zoo.safetensors").read_bytes() == (
        reference / "zoo" / "zoo.safetensors"
    ).read_bytes()
    assert all(
        (out / "zoo" / "runs" / f"run-000{r}-of-0002.safetensors").is_file() for r in range(2)
    )
    report = json.loads((out / "report.json").read_text())
    assert len(report["rows"]) == 3 and set(report["split_check"].values()) == {0}
    assert "3 test tasks (complement)" in result.stdout
