"""The GPU tier: the real pipeline, DeepSpeed with NCCL and the device-placement promises on a CUDA
GPU.

Without CUDA every test here skips with a reason naming CUDA; PDIFF_REQUIRE_GPU=1 makes that a
failure (the GPU check script sets it). scripts/gpu_check.sh runs this tier on the lent GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from pdiff.data.augment import augment_batch
from pdiff.data.tasknets import digits_cnn, resnet18_cifar
from pdiff.diffusion.gaussian import _randn
from pdiff.diffusion.noise import BatchNoise
from pdiff.evaluation.predictions import ParameterEvaluator
from pdiff.zoo.params import read_vector, select_parameters
from tests.helpers.cifar import REHEARSAL, write_cifar
from tests.helpers.configs import REPO
from tests.helpers.runs import ok, run_sweep
from tests.helpers.training import TRAIN, WEIGHTS, copy_zoo, max_weight_diff

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "run"
    ok(run_sweep(["stage=collect", "device=cuda", *TRAIN, f"paths.output_dir={out}"]))
    return out


def test_smoke_pipeline_runs_on_cuda(tmp_path):
    out = tmp_path / "run"
    result = ok(
        run_sweep(["experiment=smoke", "task=digits_cnn", "device=cuda", f"paths.output_dir={out}"])
    )
    report = json.loads((out / "report.json").read_text())
    assert report["original"]["mean"] > 90 and report["generated"]["n"] == 20, result.stdout[-2000:]
    assert "memorization" in report and (out / "memorization.png").is_file()


def test_token_design_runs_on_cuda(tmp_path):
    out = tmp_path / "run"
    ok(
        run_sweep(
            [
                "experiment=smoke",
                "task=digits_cnn",
                "generator=token",
                "ae.token_size=16",
                "denoiser.window=4",
                "diffusion.optim.batch_size=16",
                "denoiser.code.optim.steps=60",
                "denoiser.code.optim.warmup_steps=10",
                "device=cuda",
                f"paths.output_dir={out}",
            ]
        )
    )
    assert json.loads((out / "report.json").read_text())["generated"]["n"] == 20


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_one_nccl_rank_in_bf16_is_killed_and_resumes_bit_identically(zero_stage, zoo_run, tmp_path):
    args = [
        "stage=train",
        "trainer=deepspeed",
        f"trainer.zero_stage={zero_stage}",
        "trainer.precision=bf16",
        "device=cuda",
        *TRAIN,
    ]
    whole = copy_zoo(zoo_run, tmp_path / "whole")
    ok(run_sweep([*args, f"paths.output_dir={whole}"]))
    killed = copy_zoo(zoo_run, tmp_path / "killed")
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "sweep.py"), *args, f"paths.output_dir={killed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    latest = killed / "generator" / "ae_checkpoint" / "latest.json"
    deadline = time.monotonic() + 300
    while not latest.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    for victim in [
        *psutil.Process(process.pid).children(recursive=True),
        psutil.Process(process.pid),
    ]:
        victim.kill()
    process.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert 0 < killed_at < 200 and not (killed / "generator" / "generator.json").is_file()
    result = ok(run_sweep([*args, f"paths.output_dir={killed}"]))
    assert f"ae training resumes at step {killed_at}/200" in result.stdout + result.stderr
    for name in WEIGHTS:
        left, right = load_file(whole / "generator" / name), load_file(killed / "generator" / name)
        assert all(torch.equal(left[key], right[key]) for key in left), name


def test_two_nccl_ranks_on_one_node_follow_one_process(zoo_run, tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip(
            f"this node has {torch.cuda.device_count()} CUDA GPU: two NCCL ranks on one node need 2"
        )
    args = ["stage=train", "trainer=deepspeed", "trainer.zero_stage=2", "device=cuda", *TRAIN]
    one = copy_zoo(zoo_run, tmp_path / "one")
    ok(run_sweep([*args, f"paths.output_dir={one}"]))
    two = copy_zoo(zoo_run, tmp_path / "two")
    env = dict(os.environ, PDIFF_QUIET="1", WANDB_MODE="offline")
    ok(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                str(REPO / "launch" / "sweep.py"),
                *args,
                f"paths.output_dir={two}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=REPO,
        )
    )
    assert json.loads((two / "generator" / "generator.json").read_text())["ranks"] == 2
    assert (
        max_weight_diff(one, two) < 1e-3
    )  # TF32 and NCCL's reduction order: looser than gloo's 1e-4


def test_the_cifar100_rehearsal_runs_every_stage_on_cuda(tmp_path):
    root = write_cifar(tmp_path / "data", 100, train_per_class=4, test_per_class=2)
    out = tmp_path / "run"
    ok(
        run_sweep(
            [
                "task=cifar100_resnet18",
                f"data.root={root}",
                "device=cuda",
                *REHEARSAL,
                f"paths.output_dir={out}",
            ]
        )
    )
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "cifar100_resnet18" and report["k"] == 4 and report["dim"] == 2048


def test_random_draws_are_the_same_on_cpu_and_gpu():
    cuda = torch.device("cuda")
    for device in ("cpu", cuda):
        noise = BatchNoise(3, 7, 64, slice(16, 48), device=device)
        draws = (noise.randn(5, 4), noise.randint(1000))
        if device == "cpu":
            reference = draws
        else:
            assert all(torch.equal(a, b.cpu()) for a, b in zip(reference, draws))
    assert torch.equal(
        _randn((3, 9), torch.Generator().manual_seed(1), "cpu"),
        _randn((3, 9), torch.Generator().manual_seed(1), cuda).cpu(),
    )
    images = torch.randn(6, 3, 8, 8)
    assert torch.equal(
        augment_batch(images, torch.Generator().manual_seed(2)),
        augment_batch(images.to(cuda), torch.Generator().manual_seed(2)).cpu(),
    )


@pytest.mark.parametrize(
    "build, layers, shape",
    [
        (lambda: digits_cnn((1, 8, 8), 10, 8), ["bn3", "bn4"], (1, 8, 8)),
        (lambda: resnet18_cifar((3, 32, 32), 100), ["layer4.1.bn1", "layer4.1.bn2"], (3, 32, 32)),
    ],
)
@pytest.mark.parametrize("batched", [False, True])
def test_batched_evaluation_on_gpu_equals_the_naive_way(build, layers, shape, batched):
    torch.manual_seed(0)
    model = build().cuda().eval()
    spec = select_parameters(model, layers)
    base = read_vector(model, spec)
    vectors = (base + 0.3 * base.abs().mean() * torch.randn(6, spec.dim, device="cuda")).cpu()
    x = torch.randn(50, *shape, device="cuda")
    predictions = ParameterEvaluator(model, spec, x, max_chunk=4, batched=batched).predictions(
        vectors
    )
    params = dict(model.named_parameters())
    naive = []
    with torch.no_grad():
        for vector in vectors.cuda():
            saved = {name: params[name].clone() for name in spec.names}
            for name, value in spec.unflatten(vector[None]).items():
                params[name].copy_(value[0])
            naive.append(model(x).argmax(-1).cpu())
            for name, value in saved.items():
                params[name].copy_(value)
    assert torch.equal(predictions, torch.stack(naive))


def test_fp16_trains_where_it_runs(zoo_run, tmp_path):
    out = copy_zoo(zoo_run, tmp_path / "run")
    ok(
        run_sweep(
            [
                "stage=train",
                "trainer=deepspeed",
                "trainer.precision=fp16",
                "device=cuda",
                *TRAIN,
                f"paths.output_dir={out}",
            ]
        )
    )
    assert (out / "generator" / "generator.json").is_file()
