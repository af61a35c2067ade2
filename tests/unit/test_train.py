import pytest
import torch

from pdiff.nets.autoencoder import build_autoencoder
from pdiff.tracking import Tracker
from pdiff.train import EMA, fit
from tests.conftest import compose_config


class Interrupt(Exception):
    pass


def _run(cfg, tmp_path, state_name, stop_at=None):
    torch.manual_seed(0)
    model = build_autoencoder(cfg.ae, 64)
    ema = EMA(model, 0.9)
    data = torch.randn(30, 64)
    calls = {"n": 0}

    def loss(batch):
        calls["n"] += 1
        if stop_at is not None and calls["n"] > stop_at:
            raise Interrupt
        return model.loss(batch)

    tracker = Tracker(tmp_path, cfg.logger, {})
    try:
        fit(model, loss, data, cfg.ae.optim, name="ae", seed=0, state_path=tmp_path / state_name, tracker=tracker,
            ema=ema)
    finally:
        tracker.close()
    return model, ema


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = compose_config(["experiment=smoke", "ae.optim.steps=40", "ae.optim.save_every=10", "ae.optim.batch_size=8",
                          f"paths.output_dir={tmp_path}"])
    reference, reference_ema = _run(cfg, tmp_path, "a.pt")
    with pytest.raises(Interrupt):
        _run(cfg, tmp_path, "b.pt", stop_at=25)  # dies after the step-20 save point
    resumed, resumed_ema = _run(cfg, tmp_path, "b.pt")
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(reference_ema.model.state_dict().values(), resumed_ema.model.state_dict().values()):
        assert torch.equal(a, b)
    assert (tmp_path / "metrics.jsonl").read_text().count('"ae/loss"') >= 2
