"""The seed's baseline job rehearsed end to end on the local SLURM cluster, on a CPU: p-diff's
CIFAR-100 ResNet-18 job through its own sbatch script (slurm/jobs/cifar100_resnet18_k200.sh), and
CIFAR-10 through Hydra's submitit launcher, each on a CIFAR-format folder the test builds offline
(tests/helpers/cifar.py)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cifar import REHEARSAL, write_cifar
from tests.helpers.configs import REPO
from tests.helpers.runs import ok, run_sweep

pytestmark = pytest.mark.slow
POPULATIONS = ("originals", "generated")


def assert_rehearsed(out: Path, task: str, classes: int) -> None:
    """The report of p-diff's job: the CIFAR ResNet-18's last two BatchNorm layers, K checkpoints,
    the autoencoder + latent DDPM, and every population evaluated on the whole test split."""
    report = json.loads((out / "report.json").read_text())
    assert (report["task"], report["k"], report["param_count"]) == (task, 4, 2048)
    zoo = json.loads((out / "zoo" / "zoo.json").read_text())
    assert [entry["name"] for entry in zoo["spec"]] == [
        f"layer4.1.{layer}.{part}" for layer in ("bn1", "bn2") for part in ("weight", "bias")
    ]
    config = json.loads((out / "generator" / "generator.json").read_text())
    assert config["design"] == "latent" and config["config"]["task"]["net"]["_target_"].endswith(
        "resnet18_cifar"
    )
    assert (out / "generator" / "autoencoder.safetensors").is_file() and (
        out / "generator" / "denoiser.safetensors"
    )
    populations = report["memorization"]
    assert all(populations[name]["n"] > 0 for name in POPULATIONS), sorted(populations)
    assert sum(name.startswith("noise_") for name in populations) >= 2  # the frontier's scales
    assert populations["generated"]["n"] == 4 and report["n_test"] == classes * (
        1 if classes == 100 else 10
    )
    assert set(report["verdict"]["families"]) >= {
        "noise",
        "selected_noise",
        "average",
        "interpolation",
    }
    assert (out / "report.md").is_file() and (out / "accuracy.png").is_file()


def test_the_cifar100_sbatch_script_runs_every_stage_on_a_cifar_folder(tmp_path):
    root = write_cifar(tmp_path / "data", 100, train_per_class=2, test_per_class=1)
    out, log = tmp_path / "run", tmp_path / "job.out"
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline", PDIFF_OUTPUT_DIR=str(out))
    # The script asks for a GPU, 16 CPUs and 32 GB: this node has none of that, so the rehearsal
    # asks for less.
    done = subprocess.run(
        [
            "sbatch",
            "--wait",
            "--gpus=0",
            "--cpus-per-task=2",
            "--mem=6G",
            f"--output={log}",
            "slurm/jobs/cifar100_resnet18_k200.sh",
            f"data.root={root}",
            "device=cpu",
            "data.val_fraction=0.5",
            *REHEARSAL,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = log.read_text()
    assert done.returncode == 0, done.stderr + output[-3000:]
    for stage in ("collect", "train", "generate"):
        assert f"pdiff: stage={stage} done" in output
    assert (
        "pdiff: cifar100_resnet18 K=4 D=2048 | original best/mean/min" in output
    )  # evaluate's summary line
    assert f"report: {out}/report.md" in output
    assert_rehearsed(out, "cifar100_resnet18", 100)


def test_cifar10_through_the_submitit_launcher_runs_every_stage(tmp_path):
    root = write_cifar(tmp_path / "data", 10, train_per_class=12, test_per_class=10)
    out = tmp_path / "sweep"
    ok(
        run_sweep(
            [
                "-m",
                "hydra/launcher=submitit_slurm",
                "hydra.launcher.partition=debug",
                "hydra.launcher.timeout_min=10",
                "hydra.launcher.cpus_per_task=2",
                "hydra.launcher.mem_gb=6",
                "task=cifar10_resnet18",
                f"data.root={root}",
                "device=cpu",
                *REHEARSAL,
                "seed=0",
                f"paths.output_dir={out}",
            ]
        )
    )
    (run,) = [path.parent for path in out.glob("*/report.json")]
    assert_rehearsed(run, "cifar10_resnet18", 10)
