"""Bad settings and damaged outputs: a clear error naming the key or file and the rule, before any work."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import pytest
import torch

from pdiff import atomic
from pdiff.config import Stage, validate
from pdiff.errors import ConfigError, GeneratorError, TrainingDiverged
from pdiff.generators import design_class
from pdiff.generators.base import GENERATOR_CHECKSUMS, verify_generator
from pdiff.generators.latent import build_autoencoder
from pdiff.generators.nets.autoencoder import reconstruction_loss
from pdiff.generators.registry import warn_unread_overrides
from pdiff.pipeline.run import check_zoo_size
from pdiff.pipeline.stage_dirs import SUPERSEDED_DIR, changed_inputs, claim_stage_dir, stage_inputs
from pdiff.tracking import Tracker
from pdiff.training.fit import fit
from tests.helpers.configs import compose_config


def check(overrides: list[str], tmp_path) -> None:
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path / 'run'}"])
    validate(cfg)
    design_class(cfg)


@pytest.mark.parametrize("overrides, message", [
    (["+task.param.kk=5"], r"task.param.kk is not a pdiff setting .*did you mean task.param.k\?"),
    (["+generator.pca=3", "generator=flow"], r"generator.pca is not a pdiff setting .*allowed: .*pca_components"),
    (["generator=flow_conditioned", "generate.target_quantile=null", "generate.target_acc=150"],
     r"generate.target_acc=150.0 is invalid: must be an accuracy in \[0, 100\]"),
    (["generator=flow_conditioned", "generate.target_acc=50"],
     r"generate.target_acc=50.0 .*cannot be combined with generate.target_quantile=1.0 .*target_quantile=null"),
    (["generate.guidance=5"], r"generate.guidance=5.0 needs a generator trained on the checkpoints' accuracies"),
    (["generator=flow", "generate.guidance=2"], r"generator=flow is not conditioned.*generator.condition=true"),
    (["ae.optim.warmup_steps=-50"], r"ae.optim.warmup_steps=-50 is invalid: must be in \[0, ae.optim.steps="),
    (["generator=flow", "generator.optim.warmup_steps=-1"], r"generator.optim.warmup_steps=-1 is invalid"),
    (["generator=flow", "generator.optim.lr=0"], r"generator.optim.lr=0.0 is invalid: must be > 0"),
    (["generator=flow", "generator.ema_decay=1"], r"generator.ema_decay=1.0 is invalid: must be in \[0, 1\)"),
    (["task.param.k=20", "evaluate.baselines.average_of=50"],
     r"evaluate.baselines.average_of=50 is invalid: must be in \[2, task.param.k=20\]"),
    (["evaluate.baselines.noise_scales=[0.1,0.1]"], r"noise_scales=\[0.1, 0.1\] is invalid: needs at least 2 distinct"),
])
def test_bad_settings_are_refused_naming_key_value_and_rule(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        check(overrides, tmp_path)


def test_an_empty_output_folder_is_refused():
    cfg = compose_config(["paths.output_dir=''"])
    with pytest.raises(ConfigError, match=r"paths.output_dir='' is invalid: must name a folder"):
        validate(cfg)


def test_a_design_is_checked_only_on_the_groups_it_reads(tmp_path):
    check(["generator=flow", "ae.optim.warmup_steps=-50", "diffusion.optim.lr=-1"], tmp_path)  # flow reads neither
    with pytest.raises(ConfigError, match=r"diffusion.optim.lr=-1.0 is invalid"):
        check(["diffusion.optim.lr=-1"], tmp_path)


def test_overrides_of_groups_the_design_never_reads_are_named(tmp_path, caplog):
    cfg = compose_config(["generator=flow", f"paths.output_dir={tmp_path}"])
    overrides = ["ae.optim.warmup_steps=-50", "+diffusion.timesteps=10", "denoiser.width=64", "seed=1"]
    assert warn_unread_overrides(cfg, overrides) == overrides[:2]
    assert "generator=flow never reads ae or diffusion; ignored: ae.optim.warmup_steps=-50" in caplog.text
    latent = compose_config([f"paths.output_dir={tmp_path}"])
    assert warn_unread_overrides(latent, overrides) == []


def test_a_flow_generator_folder_ignores_the_autoencoder_but_not_its_own_knobs(tmp_path):
    flow = compose_config(["generator=flow", f"paths.output_dir={tmp_path}"])
    claim_stage_dir(tmp_path, stage_inputs(flow, Stage.train), keep_on_change=True)
    for other, changed in ((["ae.latent_dim=128", "diffusion.optim.steps=7"], False),
                           (["generator.optim.steps=700"], True), (["denoiser.width=64"], True)):
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
    with pytest.raises(GeneratorError, match=r"weights.safetensors does not match its checksum .* corrupted"):
        verify_generator(folder)
    (folder / "weights.safetensors").unlink()
    with pytest.raises(GeneratorError, match=r"weights.safetensors is missing from the trained generator"):
        verify_generator(folder)
    shutil.rmtree(folder)
    folder.mkdir()
    with pytest.raises(GeneratorError, match=r"no trained generator .* run stage=train first"):
        verify_generator(folder)


def test_a_diverging_generator_stops_naming_the_knob_and_saves_nothing(tmp_path):
    cfg = compose_config(["experiment=smoke", "ae.optim.lr=1e6", "ae.optim.warmup_steps=0",
                          f"paths.output_dir={tmp_path}"])
    data = torch.randn(20, 64) * 100
    tracker = Tracker(tmp_path, cfg.logger, {})
    with pytest.raises(TrainingDiverged, match=r"ae training diverged: loss nan at step \d+.*Lower ae.optim.lr"):
        fit(build_autoencoder(cfg.ae, 64), reconstruction_loss, data, cfg.ae.optim, cfg.ae.cadence, cfg.trainer,
            name="ae", seed=0, checkpoint_dir=tmp_path / "ckpt", tracker=tracker)
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


def test_a_zoo_larger_than_the_free_disk_is_refused_and_a_large_one_announced(tmp_path, monkeypatch, caplog):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 * 2**30, 0, 10 * 2**30))
    cfg = compose_config(["task.param.k=10000000", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"task.param.k=10000000 checkpoints x 256 parameters is 19.07 GiB on disk, "
                                          r"but .* has 10.00 GiB free"):
        check_zoo_size(cfg, 256, tmp_path / "run")
    check_zoo_size(cfg, 16, tmp_path / "run")
    assert "1.19 GiB on disk" in caplog.text
