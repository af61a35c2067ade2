import pytest
import torch
from omegaconf import OmegaConf

from pdiff import atomic
from pdiff.data.datasets import load_dataset
from pdiff.data.tasknets import conv1d_bn, digits_cnn
from pdiff.errors import ConfigError, TrainingDiverged
from pdiff.zoo.collect import base_lr_factor, check_runs, collect_checkpoints, sgd_step, train_base
from pdiff.zoo.params import (
    read_vector,
    select_parameters,
)
from tests.helpers.configs import compose_config
from tests.helpers.statistics import trained_statistics


def _setup(tmp_path):
    cfg = compose_config(["experiment=smoke", "task=digits_cnn", f"paths.output_dir={tmp_path}"])
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = digits_cnn((1, 8, 8), 10, 8)
    return cfg, data, model, select_parameters(model, ["bn3", "bn4"])


def test_collection_trains_only_the_subset_and_freezes_bn_statistics(tmp_path):
    cfg, data, model, spec = _setup(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vectors, accuracy = collect_checkpoints(
        model, spec, data, cfg.task.collect, 6, False, 1, tmp_path / "s.pt"
    )
    assert vectors.shape == (6, spec.dim) and accuracy.shape == (6,)
    assert not torch.equal(vectors[0], vectors[-1])
    after = model.state_dict()
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        assert changed == (name in spec.names), name  # running stats and other weights stay put
    assert torch.equal(read_vector(model, spec), vectors[-1])


class Killed(Exception):
    pass


def test_interrupted_collection_resumes_to_the_same_checkpoints(tmp_path, monkeypatch):
    cfg, data, model, spec = _setup(tmp_path)
    collect_cfg = cfg.task.collect
    assert (collect_cfg.save_state_every, collect_cfg.steps_per_checkpoint) == (5, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    full, full_acc = collect_checkpoints(
        model, spec, data, collect_cfg, 10, False, 1, tmp_path / "a.pt"
    )
    model.load_state_dict(start)
    steps = {"n": 0, "die_at": 15}  # SGD step 15 of 20: 7 checkpoints made, only 5 of them saved

    def counted_step(*args, **kwargs):
        steps["n"] += 1
        if steps["n"] == steps["die_at"]:
            raise Killed
        return sgd_step(*args, **kwargs)

    monkeypatch.setattr("pdiff.zoo.collect.sgd_step", counted_step)
    with pytest.raises(Killed):
        collect_checkpoints(model, spec, data, collect_cfg, 10, False, 1, tmp_path / "b.pt")
    model.load_state_dict(start)  # a fresh process: only the files on disk remain
    steps.update(n=0, die_at=None)
    resumed, resumed_acc = collect_checkpoints(
        model, spec, data, collect_cfg, 10, False, 1, tmp_path / "b.pt"
    )
    assert steps["n"] == 5 * 2  # it went on from checkpoint 5, not from the start
    assert torch.equal(resumed, full) and torch.equal(
        resumed_acc, full_acc
    )  # bit for bit, momentum and all


def test_a_part_left_before_its_resume_point_is_kept_when_the_redone_checkpoints_equal_it(
    tmp_path, monkeypatch
):
    """Killed between a part's write and its resume point's: the resumed run redoes those
    checkpoints and keeps the part on disk (written once), as a requeued array task must."""
    cfg, data, model, spec = _setup(tmp_path)
    collect_cfg, start = cfg.task.collect, {k: v.clone() for k, v in model.state_dict().items()}
    writes, write_torch = [], atomic.write_torch

    def write_torch_then_die(path, state):
        writes.append(path)
        if len(writes) == 2:  # part 1 is on disk, its resume point is not
            raise Killed
        write_torch(path, state)

    monkeypatch.setattr("pdiff.zoo.collect.atomic.write_torch", write_torch_then_die)
    with pytest.raises(Killed):
        collect_checkpoints(model, spec, data, collect_cfg, 10, False, 1, tmp_path / "s.pt")
    monkeypatch.undo()
    part = tmp_path / "s.part1.safetensors"
    kept = (part.stat().st_ino, part.stat().st_mtime_ns)
    model.load_state_dict(start)
    resumed, _ = collect_checkpoints(
        model, spec, data, collect_cfg, 10, False, 1, tmp_path / "s.pt"
    )
    assert (part.stat().st_ino, part.stat().st_mtime_ns) == kept
    model.load_state_dict(start)
    full, _ = collect_checkpoints(
        model, spec, data, collect_cfg, 10, False, 1, tmp_path / "full.pt"
    )
    assert torch.equal(resumed, full)


def test_diverging_collection_stops_naming_the_learning_rate_and_keeps_what_was_saved(tmp_path):
    cfg, data, model, spec = _setup(tmp_path)
    collect_cfg = OmegaConf.merge(cfg.task.collect, {"lr": 1e12, "save_state_every": 1})
    with pytest.raises(TrainingDiverged, match=r"lower task.collect.lr=1000000000000.0"):
        collect_checkpoints(
            model,
            select_parameters(model, ["*"]),
            data,
            collect_cfg,
            6,
            False,
            1,
            tmp_path / "s.pt",
        )
    assert (
        not (tmp_path / "s.pt").exists()
        or atomic.read_torch(tmp_path / "s.pt")["vectors"].isfinite().all()
    )


def test_diverging_base_training_stops_naming_the_learning_rate(tmp_path):
    cfg, data, model, _ = _setup(tmp_path)
    with pytest.raises(TrainingDiverged, match=r"lower task.base.lr=1000000000000.0"):
        base_cfg = OmegaConf.merge(cfg.task.base, {"lr": 1e12, "epochs": 2})
        train_base(model, data, base_cfg, False, 0, tmp_path / "base.pt")


def test_base_schedule_is_step_decay_at_milestones_or_cosine(tmp_path):
    cifar = compose_config(["task=cifar100_resnet18", f"paths.output_dir={tmp_path}"]).task.base
    assert list(cifar.milestones) == [10, 20, 30] and cifar.epochs == 30
    factor = base_lr_factor(cifar, steps_per_epoch=4)
    assert [factor(s) for s in (0, 39, 40, 79, 80, 119)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    cosine = base_lr_factor(
        compose_config([f"paths.output_dir={tmp_path}"]).task.base, steps_per_epoch=4
    )
    assert (
        cosine(0) == 1.0 and cosine(60) == pytest.approx(0.5) and cosine(120) == pytest.approx(0.0)
    )


def test_whole_model_collection_keeps_the_runs_statistics_in_every_checkpoint(tmp_path):
    cfg = compose_config(["experiment=smoke", "task=digits_cnn", f"paths.output_dir={tmp_path}"])
    data = load_dataset(cfg.data)
    model = trained_statistics(digits_cnn((1, 8, 8), 10, 8), (1, 8, 8), 1)
    spec = select_parameters(model, ["*"], statistics=True)
    statistics = {
        entry.name: model.state_dict()[entry.name].clone()
        for entry in spec.entries
        if entry.statistic
    }
    vectors, _ = collect_checkpoints(
        model, spec, data, cfg.task.collect, 3, False, 1, tmp_path / "s.pt"
    )
    for vector in vectors:
        carried = spec.unflatten(vector[None])
        assert all(torch.equal(carried[name][0], value) for name, value in statistics.items())
    assert not torch.equal(vectors[0], vectors[-1])  # the weights moved, the statistics did not


@pytest.mark.parametrize(
    "statistics, recalibrate, refused", [(False, 0, True), (True, 0, False), (False, 4, False)]
)
def test_runs_of_a_whole_batchnorm_network_need_carried_or_recalibrated_statistics(
    statistics, recalibrate, refused
):
    cfg = compose_config(["experiment=mnist1d_cnn_full"])
    model = conv1d_bn((1, 40), 10, [6, 6])
    spec = select_parameters(model, ["*"], statistics=statistics)
    if refused:
        with pytest.raises(
            ConfigError, match=r"task.param.statistics=true .* evaluate.recalibrate_batches > 0"
        ):
            check_runs(cfg.task.collect, model, spec, recalibrate)
    else:
        check_runs(cfg.task.collect, model, spec, recalibrate)
