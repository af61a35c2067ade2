"""Bad settings and damaged outputs: a clear error naming the key or file and the rule, before any
work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple

import numpy as np
import pytest
import torch

from pdiff import atomic
from pdiff.config import Stage, validate
from pdiff.data import npz
from pdiff.errors import ConfigError, GeneratorError, TrainingDiverged, ZooError
from pdiff.generators import design_class
from pdiff.generators.interface import GENERATOR_CHECKSUMS, Conditioning, verify_generator
from pdiff.generators.latent import build_autoencoder
from pdiff.generators.nets.autoencoder import reconstruction_loss
from pdiff.pipeline.collect_stage import check_runs_belong
from pdiff.pipeline.main_stages import warn_outside_zoo
from pdiff.pipeline.output_dir import folder_problem, mark_made_by_pdiff
from pdiff.pipeline.run import check_zoo_size, preflight, run_pipeline, usable_threads
from pdiff.pipeline.stage_dirs import (
    INPUTS_FILE,
    SUPERSEDED_DIR,
    changed_inputs,
    claim_stage_dir,
    stage_inputs,
)
from pdiff.pipeline.unread import note_unread_overrides, unread_overrides
from pdiff.tracking import RUN_ID_FILE, Tracker, _wandb_run_id
from pdiff.training.fit import fit
from pdiff.zoo.store import BASE_WEIGHTS
from tests.helpers.configs import REPO, compose_config


def check(overrides: list[str], tmp_path) -> None:
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path / 'run'}"])
    validate(cfg)
    design_class(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["+task.param.kk=5"],
            r"task.param.kk is not a pdiff setting .*did you mean task.param.k\?",
        ),
        (
            ["+generator.pca=3", "generator=flow"],
            r"generator.pca is not a pdiff setting .*allowed: .*pca_components",
        ),
        (
            [
                "generator=flow_conditioned",
                "generate.target_quantile=null",
                "generate.target_acc=150",
            ],
            r"generate.target_acc=150.0 is invalid: must be an accuracy in \[0, 100\]",
        ),
        (
            ["generator=flow_conditioned", "generate.target_acc=50"],
            r"generate.target_acc=50.0 .*cannot be combined with generate.target_quantile=1.0 .*target_quantile=null",
        ),
        (
            ["generate.guidance=5"],
            r"generate.guidance=5.0 needs a generator trained on the checkpoints' accuracies",
        ),
        (
            ["generator=flow", "generate.guidance=2"],
            r"generator=flow is not conditioned.*generator.condition=true",
        ),
        (
            ["ae.optim.warmup_steps=-50"],
            r"ae.optim.warmup_steps=-50 is invalid: must be in \[0, ae.optim.steps=",
        ),
        (
            ["generator=flow", "generator.optim.warmup_steps=-1"],
            r"generator.optim.warmup_steps=-1 is invalid",
        ),
        (
            ["generator=flow", "generator.optim.lr=0"],
            r"generator.optim.lr=0.0 is invalid: must be > 0",
        ),
        (
            ["generator=flow", "generator.ema_decay=1"],
            r"generator.ema_decay=1.0 is invalid: must be in \[0, 1\)",
        ),
        (
            ["task.param.k=20", "evaluate.baselines.average_of=50"],
            r"evaluate.baselines.average_of=50 is invalid: must be in \[2, task.param.k=20\]",
        ),
        (
            ["evaluate.baselines.noise_scales=[0.1,0.1]"],
            r"noise_scales=\[0.1, 0.1\] is invalid: needs at least 2 distinct",
        ),
    ],
)
def test_bad_settings_are_refused_naming_key_value_and_rule(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        check(overrides, tmp_path)


def test_an_empty_output_folder_is_refused():
    cfg = compose_config(["paths.output_dir=''"])
    with pytest.raises(ConfigError, match=r"paths.output_dir='' is invalid: must name a folder"):
        validate(cfg)


def test_a_design_is_checked_only_on_the_groups_it_reads(tmp_path):
    check(
        ["generator=flow", "ae.optim.warmup_steps=-50", "diffusion.optim.lr=-1"], tmp_path
    )  # flow reads neither
    with pytest.raises(ConfigError, match=r"diffusion.optim.lr=-1.0 is invalid"):
        check(["diffusion.optim.lr=-1"], tmp_path)


def test_overrides_of_groups_the_design_never_reads_are_named_and_kept_for_the_report(
    tmp_path, caplog
):
    cfg = compose_config(["generator=flow", f"paths.output_dir={tmp_path}"])
    overrides = [
        "ae.optim.warmup_steps=-50",
        "+diffusion.timesteps=10",
        "denoiser.width=64",
        "seed=1",
    ]
    assert note_unread_overrides(cfg, overrides) == [
        "ae.optim.warmup_steps=-50 (generator=flow never reads ae)",
        "+diffusion.timesteps=10 (generator=flow never reads diffusion)",
    ]
    assert "ignored: ae.optim.warmup_steps=-50 (generator=flow never reads ae)" in caplog.text
    assert list(cfg.ignored_overrides) == unread_overrides(cfg, overrides)
    latent = compose_config([f"paths.output_dir={tmp_path}"])
    assert unread_overrides(latent, overrides) == []


def test_data_settings_another_source_reads_are_named_with_the_source_that_reads_them(tmp_path):
    digits = compose_config(["task=digits_cnn", f"paths.output_dir={tmp_path}"])
    overrides = [
        "data.mnist1d.seed=7",
        "data.mnist1d.test_seed=2007",
        "data.path=x.npz",
        "data.root=/d",
        "data.val_fraction=0.2",
    ]
    assert unread_overrides(digits, overrides) == [
        "data.mnist1d.seed=7 (data.mnist1d is read only when data.name is mnist1d; this run has data.name=digits)",
        "data.mnist1d.test_seed=2007 (data.mnist1d is read only when data.name is mnist1d; this run has "
        "data.name=digits)",
        "data.path=x.npz (data.path is read only when data.name is npz; this run has data.name=digits)",
        "data.root=/d (data.root is read only when data.name is mnist1d or mnist or cifar10 or cifar100; this run has "
        "data.name=digits)",
    ]
    mnist1d = compose_config(["task=mnist1d_mlp", f"paths.output_dir={tmp_path}"])
    assert unread_overrides(mnist1d, overrides) == [
        "data.path=x.npz (data.path is read only when data.name is npz; this run has data.name=mnist1d)"
    ]


def test_a_flow_generator_folder_ignores_the_autoencoder_but_not_its_own_knobs(tmp_path):
    flow = compose_config(["generator=flow", f"paths.output_dir={tmp_path}"])
    claim_stage_dir(tmp_path, stage_inputs(flow, Stage.train), keep_on_change=True)
    for other, changed in (
        (["ae.latent_dim=128", "diffusion.optim.steps=7"], False),
        (["generator.optim.steps=700"], True),
        (["denoiser.width=64"], True),
    ):
        cfg = compose_config(["generator=flow", *other, f"paths.output_dir={tmp_path}"])
        assert bool(changed_inputs(tmp_path, stage_inputs(cfg, Stage.train))) is changed, other
    latent = compose_config([f"paths.output_dir={tmp_path}"])
    assert {"ae", "denoiser", "diffusion"} <= set(stage_inputs(latent, Stage.train))


def test_a_remade_cheap_folder_keeps_the_old_files_aside(tmp_path):
    folder = tmp_path / "generated"
    folder.mkdir()
    claim_stage_dir(folder, {"generate": {"n": 20}}, keep_on_change=False)
    (folder / "params.safetensors").write_bytes(b"twenty models")
    claim_stage_dir(folder, {"generate": {"n": 40}}, keep_on_change=False)
    assert sorted(p.name for p in folder.iterdir()) == ["inputs.json"]
    (archive,) = (tmp_path / SUPERSEDED_DIR).iterdir()
    assert (archive / "params.safetensors").read_bytes() == b"twenty models"
    assert atomic.read_checked_json(archive / "inputs.json") == {"generate": {"n": 20}}
    with pytest.raises(ConfigError, match=r"generate.n: 40 -> 60"):
        claim_stage_dir(folder, {"generate": {"n": 60}}, keep_on_change=True)


def _generator_folder(tmp_path):
    folder = tmp_path / "generator"
    folder.mkdir()
    atomic.write_safetensors(folder / "weights.safetensors", {"w": torch.arange(100.0)})
    digest = atomic.sha256(folder / "weights.safetensors")
    atomic.write_json(folder / GENERATOR_CHECKSUMS, {"weights.safetensors": digest})
    atomic.write_json(folder / "generator.json", {"design": "toy"})
    return folder


def test_generator_files_are_checked_against_their_checksums(tmp_path):
    folder = _generator_folder(tmp_path)
    verify_generator(folder)
    data = bytearray((folder / "weights.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (folder / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(
        GeneratorError, match=r"weights.safetensors does not match its checksum .* corrupted"
    ):
        verify_generator(folder)
    (folder / "weights.safetensors").unlink()
    with pytest.raises(
        GeneratorError, match=r"weights.safetensors is missing from the trained generator"
    ):
        verify_generator(folder)
    shutil.rmtree(folder)
    folder.mkdir()
    with pytest.raises(GeneratorError, match=r"no trained generator .* run stage=train first"):
        verify_generator(folder)


def test_a_diverging_generator_stops_naming_the_knob_and_saves_nothing(tmp_path):
    cfg = compose_config(
        [
            "experiment=smoke",
            "task=digits_cnn",
            "ae.optim.lr=1e6",
            "ae.optim.warmup_steps=0",
            f"paths.output_dir={tmp_path}",
        ]
    )
    data = torch.randn(20, 64) * 100
    tracker = Tracker(tmp_path, cfg.logger, {})
    with pytest.raises(
        TrainingDiverged, match=r"ae training diverged: loss nan at step \d+.*Lower ae.optim.lr"
    ):
        fit(
            build_autoencoder(cfg.ae, 64),
            reconstruction_loss,
            data,
            cfg.ae.optim,
            cfg.ae.cadence,
            cfg.trainer,
            name="ae",
            seed=0,
            checkpoint_dir=tmp_path / "ckpt",
            tracker=tracker,
        )
    tracker.close()
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_a_resumed_phase_drops_the_rows_it_logs_again(tmp_path):
    cfg = compose_config([f"paths.output_dir={tmp_path}"])
    tracker = Tracker(tmp_path, cfg.logger, {})
    for step in (10, 20, 30):
        tracker.log({"ae/step": step, "ae/loss": 1.0 / step})
    tracker.log({"collect/base_val_acc": 90.0})
    tracker.rewind("ae", 20)
    tracker.log({"ae/step": 30, "ae/loss": 0.5})
    tracker.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row.get("ae/step") for row in rows] == [10, 20, None, 30]
    assert rows[-1]["ae/loss"] == 0.5


def test_a_zoo_larger_than_the_free_disk_is_refused_and_a_large_one_announced(
    tmp_path, monkeypatch, caplog
):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 * 2**30, 0, 10 * 2**30))
    cfg = compose_config(["task.param.k=10000000", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(
        ConfigError,
        match=r"task.param.k=10000000 checkpoints x 256 parameters is 19.07 GiB on disk, "
        r"but .* has 10.00 GiB free",
    ):
        check_zoo_size(cfg, 256, tmp_path / "run")
    check_zoo_size(cfg, 16, tmp_path / "run")
    assert "1.19 GiB on disk" in caplog.text


# Round 3 of bad inputs and faults (issue 25): each case of its table.


def test_threads_above_the_cores_are_capped_with_a_warning(caplog):
    cores = len(os.sched_getaffinity(0))
    assert usable_threads(cores) == cores and "threads=" not in caplog.text
    assert usable_threads(1000) == cores
    assert f"threads=1000 is more than the {cores} cores this job may use" in caplog.text


@pytest.mark.parametrize("content", ["", "not an id!\n", "x" * 65, "a/b"])
def test_a_wandb_run_id_file_holding_no_id_is_named(tmp_path, content):
    (tmp_path / RUN_ID_FILE).write_text(content)
    with pytest.raises(ConfigError, match=rf"{tmp_path / RUN_ID_FILE} holds .*, not a W&B run id"):
        _wandb_run_id(tmp_path)


def test_a_lost_wandb_run_id_beside_earlier_runs_is_warned_about(tmp_path, caplog):
    first = _wandb_run_id(tmp_path)
    assert (tmp_path / RUN_ID_FILE).read_text().strip() == first and "missing" not in caplog.text
    assert _wandb_run_id(tmp_path) == first
    (tmp_path / "wandb" / f"offline-run-20261203_000000-{first}").mkdir(parents=True)
    (tmp_path / RUN_ID_FILE).unlink()
    second = _wandb_run_id(tmp_path)
    assert second != first
    assert (
        f"{RUN_ID_FILE} is missing but" in caplog.text
        and f"offline-run-20261203_000000-{first}" in caplog.text
    )


def test_a_target_outside_the_zoo_is_warned_about(caplog):
    zoo = torch.tensor([96.8, 97.5, 98.4], dtype=torch.float64)
    assert not warn_outside_zoo(Conditioning(98.0), zoo) and not warn_outside_zoo(None, zoo)
    assert warn_outside_zoo(Conditioning(99.99), zoo)
    assert (
        "generate.target_acc=99.99 lies outside the zoo's validation accuracies (96.80-98.40%)"
        in caplog.text
    )


def test_runs_of_another_collection_are_never_merged(tmp_path):
    cfg = compose_config(["experiment=smoke", "task=digits_cnn", f"paths.output_dir={tmp_path}"])
    atomic.write_safetensors(tmp_path / BASE_WEIGHTS, {"w": torch.ones(3)})
    base = atomic.sha256(tmp_path / BASE_WEIGHTS)
    own = {
        "config_sha256": atomic.json_digest(stage_inputs(cfg, Stage.collect)),
        "base_sha256": base,
    }
    other_lr = compose_config(
        [
            "experiment=smoke",
            "task=digits_cnn",
            "task.collect.lr=0.2",
            f"paths.output_dir={tmp_path}",
        ]
    )
    paths = [
        tmp_path / "run-0000-of-0003",
        tmp_path / "run-0001-of-0003",
        tmp_path / "run-0002-of-0003",
    ]
    check_runs_belong(cfg, tmp_path, paths, [own, own, own])
    with pytest.raises(
        ZooError,
        match=r"run-0001-of-0003 \(another config\), run-0002-of-0003 \(another base "
        r"model\) was not collected by this collection",
    ):
        check_runs_belong(
            cfg,
            tmp_path,
            paths,
            [
                own,
                {**own, "config_sha256": atomic.json_digest(stage_inputs(other_lr, Stage.collect))},
                {**own, "base_sha256": "0" * 64},
            ],
        )


def test_a_folder_pdiff_did_not_make_or_a_dangling_link_is_refused(tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("...")
    assert "is a folder pdiff did not make, holding chapter1.tex" in folder_problem(mine)
    with pytest.raises(ConfigError, match="is a folder pdiff did not make"):
        preflight(
            compose_config(["experiment=smoke", "task=digits_cnn", f"paths.output_dir={mine}"]),
            [Stage.collect],
        )
    assert sorted(path.name for path in mine.iterdir()) == ["chapter1.tex"]
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    assert folder_problem(link).startswith(f"is a dangling symbolic link (to {tmp_path / 'gone'})")
    hydra_only = tmp_path / "new"
    hydra_only.mkdir()
    (hydra_only / "sweep.log").write_text("")  # Hydra's job log, written before pdiff starts
    assert folder_problem(hydra_only) is None
    sweep = tmp_path / "sweep"
    mark_made_by_pdiff(sweep / "seed=0")
    (sweep / "seed=0" / "config.yaml").write_text("seed: 0\n")
    assert folder_problem(sweep) is None
    assert folder_problem(link / "run").startswith(
        f"lies under {link}, a dangling symbolic link (to "
    )
    with pytest.raises(ConfigError, match=r"lies under .*link, a dangling symbolic link"):
        preflight(
            compose_config(
                ["experiment=smoke", "task=digits_cnn", f"paths.output_dir={link / 'run'}"]
            ),
            [Stage.collect],
        )


@pytest.mark.parametrize(
    "held", ["config.yaml", "zoo", ".submitit", "sweep.json", ".pdiff.lock", ".pdiff"]
)
def test_a_folder_is_pdiffs_by_the_marker_it_wrote_not_by_file_names(held, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    if held in ("zoo", ".submitit"):
        (mine / held).mkdir()
    else:
        (mine / held).write_text("the user's own\n")
    assert "is a folder pdiff did not make" in folder_problem(mine)
    (mine / "config.yaml").write_text("mine: true\n")
    with pytest.raises(ConfigError, match="is a folder pdiff did not make"):
        run_pipeline(
            compose_config(["experiment=smoke", "task=digits_cnn", f"paths.output_dir={mine}"])
        )
    assert (mine / "config.yaml").read_text() == "mine: true\n"
    mark_made_by_pdiff(mine)
    assert folder_problem(mine) is None
    (tmp_path / "old").mkdir()  # a run of a pdiff from before the marker
    (tmp_path / "old" / ".pdiff.lock").write_text("pid 12 on node1, since 2024-05-01 10:00:00")
    assert folder_problem(tmp_path / "old") is None


def test_a_stage_folder_without_its_inputs_or_with_edited_inputs_is_refused(tmp_path):
    cfg = compose_config(["experiment=smoke", "task=digits_cnn", f"paths.output_dir={tmp_path}"])
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    claim_stage_dir(zoo, stage_inputs(cfg, Stage.collect), keep_on_change=True)
    (zoo / "zoo.json").write_text("{}")
    assert changed_inputs(zoo, stage_inputs(cfg, Stage.collect)) == []
    data = json.loads((zoo / "inputs.json").read_text())
    data["task"]["param"]["k"] = 30
    (zoo / "inputs.json").write_text(json.dumps(data))
    with pytest.raises(ZooError, match=r"inputs.json does not match its own checksum"):
        changed_inputs(zoo, stage_inputs(cfg, Stage.collect))
    (zoo / "inputs.json").write_text("{broken")
    with pytest.raises(ZooError, match=r"inputs.json is not valid JSON"):
        changed_inputs(zoo, stage_inputs(cfg, Stage.collect))
    (zoo / "inputs.json").unlink()
    with pytest.raises(
        ConfigError,
        match=r"inputs.json: missing, yet the folder holds zoo.json: made with an unknown",
    ):
        claim_stage_dir(zoo, stage_inputs(cfg, Stage.collect), keep_on_change=True)


def test_a_changed_design_is_named_rather_than_the_groups_that_follow_from_it(tmp_path):
    latent = compose_config(["experiment=smoke", "task=digits_cnn", f"paths.output_dir={tmp_path}"])
    flow = compose_config(
        ["experiment=smoke", "task=digits_cnn", "generator=flow", f"paths.output_dir={tmp_path}"]
    )
    claim_stage_dir(tmp_path, stage_inputs(latent, Stage.train), keep_on_change=True)
    assert changed_inputs(tmp_path, stage_inputs(flow, Stage.train)) == [
        "generator.design: 'latent' -> 'flow'"
    ]


def test_rows_of_an_attempt_killed_before_its_first_resume_point_are_dropped(tmp_path):
    cfg = compose_config(
        [
            "experiment=smoke",
            "task=digits_cnn",
            "ae.optim.steps=20",
            "ae.cadence.log_every=10",
            f"paths.output_dir={tmp_path}",
        ]
    )
    tracker = Tracker(tmp_path, cfg.logger, {})
    for step in (10, 20):  # what a killed attempt logged; it saved no checkpoint
        tracker.log({"ae/step": step, "ae/loss": 9.0})
    fit(
        build_autoencoder(cfg.ae, 64),
        reconstruction_loss,
        torch.randn(20, 64),
        cfg.ae.optim,
        cfg.ae.cadence,
        cfg.trainer,
        name="ae",
        seed=0,
        checkpoint_dir=tmp_path / "ckpt",
        tracker=tracker,
    )
    tracker.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [row["ae/step"] for row in rows if "ae/step" in row]
    assert steps == [10, 20] and all(row["ae/loss"] != 9.0 for row in rows if "ae/loss" in row)


def test_collection_inputs_digest_only_the_training_arrays_of_an_npz(tmp_path, monkeypatch):
    """The test arrays are read for their digest only when evaluate's inputs are asked for."""
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.normal(size=(40, 3)),
        y_train=np.arange(40) % 2,
        x_test=rng.normal(size=(20, 3)),
        y_test=np.arange(20) % 2,
    )
    read = []
    real = npz._arrays_digest
    monkeypatch.setattr(
        npz, "_arrays_digest", lambda archive, part: read.append(part) or real(archive, part)
    )
    cfg = compose_config(
        ["task=npz_mlp", f"data.path={path}", f"paths.output_dir={tmp_path / 'run'}"]
    )
    for stage in (Stage.collect, Stage.train, Stage.generate):
        assert stage_inputs(cfg, stage)["data"]["train_sha256"] is not None
    assert read == ["train"]
    assert stage_inputs(cfg, Stage.evaluate)["test_data"]["sha256"] is not None and read == [
        "train",
        "test",
    ]


def test_each_stage_records_the_thread_count_it_ran_with_and_a_finished_zoo_serves_any(tmp_path):
    """threads=1 and threads=2 make different base models and zoos: each stage folder records the
    count it was made with; a later stage on another count still reads the zoo (its own folder
    records its own count)."""
    one, two = (
        compose_config(["experiment=smoke", f"threads={n}", f"paths.output_dir={tmp_path}"])
        for n in (1, 2)
    )
    assert all(
        stage_inputs(one, stage)["threads"] == 1 for stage in Stage if stage is not Stage.all
    )
    claim_stage_dir(tmp_path / "zoo", stage_inputs(one, Stage.collect), keep_on_change=True)
    claim_stage_dir(tmp_path / "generator", stage_inputs(two, Stage.train), keep_on_change=True)
    assert changed_inputs(tmp_path / "zoo", stage_inputs(two, Stage.collect)) == []
    assert [
        atomic.read_checked_json(tmp_path / part / INPUTS_FILE)["threads"]
        for part in ("zoo", "generator")
    ] == [1, 2]


def test_data_settings_collection_never_reads_leave_a_finished_zoo_alone(tmp_path):
    base = ["experiment=smoke", "task=digits_cnn", f"paths.output_dir={tmp_path}"]
    made = compose_config(base)
    for stage in (Stage.collect, Stage.evaluate):
        claim_stage_dir(tmp_path / stage.value, stage_inputs(made, stage), keep_on_change=False)
    smaller = compose_config(
        [*base, "data.eval_batch_size=64"]
    )  # lowered after running out of memory at evaluate
    assert changed_inputs(tmp_path / "collect", stage_inputs(smaller, Stage.collect)) == []
    assert changed_inputs(tmp_path / "evaluate", stage_inputs(smaller, Stage.evaluate)) == [
        "test_data.eval_batch_size: 1000 -> 64"
    ]  # recalibration batches are that size: evaluate again
    unread = compose_config(
        [*base, "data.mnist1d.seed=7", "data.mnist1d.test_seed=9", "data.root=/elsewhere"]
    )
    for stage in (Stage.collect, Stage.evaluate):
        assert changed_inputs(tmp_path / stage.value, stage_inputs(unread, stage)) == [], stage


def test_a_quoted_home_folder_is_where_hydra_writes_its_log_too(tmp_path):
    """paths.output_dir='~/DIR': Hydra's sweep.log goes into $HOME/DIR with pdiff's files, not into
    ./~/DIR."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = dict(os.environ, HOME=str(home), PDIFF_QUIET="1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "sweep.py"),
            "experiment=smoke",
            "stage=evaluate",
            "paths.output_dir='~/DIR'",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    assert result.returncode == 1 and "no generated models in" in result.stderr, result.stderr[
        -2000:
    ]
    assert (home / "DIR" / "sweep.log").is_file() and not (cwd / "~").exists()
