import pytest
import torch

from pdiff.generators.latent import build_autoencoder
from pdiff.generators.nets.autoencoder import reconstruction_loss
from pdiff.tracking import Tracker
from pdiff.training.fit import fit, global_batch_size
from tests.helpers.configs import compose_config


class Interrupt(Exception):
    pass


def _run(cfg, tmp_path, checkpoint, stop_at=None):
    torch.manual_seed(0)
    data = torch.randn(30, 64)
    calls = {"n": 0}

    def loss(forward, batch, noise):
        calls["n"] += 1
        if stop_at is not None and calls["n"] > stop_at:
            raise Interrupt
        return reconstruction_loss(forward, batch, noise)

    tracker = Tracker(tmp_path, cfg.logger, {})
    try:
        return fit(
            build_autoencoder(cfg.ae, 64),
            loss,
            data,
            cfg.ae.optim,
            cfg.ae.cadence,
            cfg.trainer,
            name="ae",
            seed=0,
            checkpoint_dir=tmp_path / checkpoint,
            tracker=tracker,
            ema_decay=0.9,
        )
    finally:
        tracker.close()


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, grad_accum):
    cfg = compose_config(
        [
            "experiment=smoke",
            "task=digits_cnn",
            "ae.optim.steps=40",
            "ae.cadence.save_every=10",
            "ae.optim.batch_size=8",
            f"trainer.grad_accum={grad_accum}",
            f"paths.output_dir={tmp_path}",
        ]
    )
    reference = _run(cfg, tmp_path, "a")
    with pytest.raises(Interrupt):
        _run(cfg, tmp_path, "b", stop_at=25 * grad_accum)  # dies after the step-20 save point
    resumed = _run(cfg, tmp_path, "b")
    for weights in ("weights", "ema_weights"):
        for key, value in getattr(reference, weights).items():
            assert torch.equal(value, getattr(resumed, weights)[key]), (weights, key)
    assert (tmp_path / "metrics.jsonl").read_text().count('"ae/loss"') >= 2


def test_gradient_accumulation_matches_the_whole_batch(tmp_path):
    runs = []
    for grad_accum in (1, 4):
        cfg = compose_config(
            [
                "experiment=smoke",
                "task=digits_cnn",
                "ae.optim.steps=15",
                "ae.optim.batch_size=8",
                f"trainer.grad_accum={grad_accum}",
                f"paths.output_dir={tmp_path}",
            ]
        )
        runs.append(_run(cfg, tmp_path, f"accum{grad_accum}"))
    for key, value in runs[0].weights.items():
        torch.testing.assert_close(value, runs[1].weights[key], rtol=1e-4, atol=1e-5)


def test_resuming_with_another_trainer_layout_is_refused(tmp_path):
    cfg = compose_config(
        [
            "experiment=smoke",
            "task=digits_cnn",
            "ae.optim.steps=20",
            "ae.cadence.save_every=10",
            f"paths.output_dir={tmp_path}",
        ]
    )
    with pytest.raises(Interrupt):
        _run(cfg, tmp_path, "c", stop_at=15)
    changed = compose_config(
        [
            "experiment=smoke",
            "task=digits_cnn",
            "ae.optim.steps=20",
            "trainer.grad_accum=2",
            f"paths.output_dir={tmp_path}",
        ]
    )
    with pytest.raises(ValueError, match="grad_accum"):
        _run(changed, tmp_path, "c")


def test_global_batch_is_a_multiple_of_ranks_times_micro_batches():
    assert global_batch_size(200, 21, 2) == 20
    assert global_batch_size(8, 30, 4) == 8
    with pytest.raises(ValueError, match="cannot be split"):
        global_batch_size(200, 3, 4)


def test_plain_trainer_in_bf16_autocast_trains_like_fp32(tmp_path):
    runs = {}
    for precision in ("fp32", "bf16"):
        cfg = compose_config(
            [
                "experiment=smoke",
                "task=digits_cnn",
                "ae.optim.steps=30",
                "ae.optim.batch_size=8",
                f"trainer.precision={precision}",
                f"paths.output_dir={tmp_path}",
            ]
        )
        runs[precision] = _run(cfg, tmp_path, f"precision_{precision}")
    assert all(
        value.dtype == torch.float32 for value in runs["bf16"].weights.values()
    )  # fp32 master weights
    assert abs(runs["bf16"].last_loss - runs["fp32"].last_loss) < 0.1 * runs["fp32"].last_loss
    assert any(
        not torch.equal(runs["bf16"].weights[k], runs["fp32"].weights[k])
        for k in runs["fp32"].weights
    )
