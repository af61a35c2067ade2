"""No test label is read before the evaluate stage: permuting y_test leaves every earlier artefact
byte-identical.

The runs are in this process (run_pipeline, as launch/sweep.py calls it): the subject is what each
stage reads."""

import json
import shutil

import numpy as np
import pytest

from pdiff.pipeline.run import run_pipeline
from tests.helpers.configs import QUICK_EVALUATION, compose_config
from tests.helpers.runs import stage_files

pytestmark = pytest.mark.slow
BLOBS = [
    "experiment=smoke",
    "task=npz_mlp",
    "task.net.hidden=[16,16]",
    "task.param.k=10",
    "evaluate.baselines.average_of=4",
    "generate.n=10",
    *QUICK_EVALUATION,
]
DESIGNS = {
    "latent": [],
    "token": [
        "generator=token",
        "ae.normalization=per_coordinate",
        "ae.token_size=16",
        "ae.optim.steps=30",
        "denoiser.window=4",
        "diffusion.optim.steps=30",
        "denoiser.code.optim.steps=30",
        "denoiser.code.optim.warmup_steps=5",
        "sampler=ddim",
        "sampler.steps=10",
    ],
    "flow_conditioned": ["generator=flow_conditioned", "generator.optim.steps=60"],
}
STAGE_DIRS = ("zoo", "generator", "generated")


def _blobs(path, permute_test: bool) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 12))
    labels = rng.integers(0, 3, 500)
    x = centres[labels] + 1.2 * rng.normal(size=(500, 12))
    y_test = labels[400:]
    if permute_test:
        y_test = np.random.default_rng(1).permutation(y_test)
    np.savez(path, x_train=x[:400], y_train=labels[:400], x_test=x[400:], y_test=y_test)


@pytest.mark.parametrize("design", DESIGNS)
def test_permuted_test_labels_leave_zoo_generator_and_generated_byte_identical(design, tmp_path):
    data, out, first = tmp_path / "data.npz", tmp_path / "run", tmp_path / "first"
    cfg = compose_config([*BLOBS, *DESIGNS[design], f"data.path={data}", f"paths.output_dir={out}"])
    _blobs(data, permute_test=False)
    run_pipeline(cfg)
    shutil.move(out, first)
    _blobs(data, permute_test=True)  # the same file, the same config: only y_test differs
    run_pipeline(cfg)
    before, after = stage_files(first, STAGE_DIRS), stage_files(out, STAGE_DIRS)
    assert {name.split("/")[0] for name in before} == set(
        STAGE_DIRS
    ) and "zoo/zoo.safetensors" in before
    assert before.keys() == after.keys()
    assert [name for name in before if before[name] != after[name]] == []
    reports = [json.loads((folder / "report.json").read_text()) for folder in (first, out)]
    assert reports[0]["original"] != reports[1]["original"]  # evaluate did read the permuted labels
    assert reports[0]["validation"] == reports[1]["validation"]
