import time

from pdiff.tracking import Tracker
from tests.helpers.configs import compose_config
from tests.helpers.wandb_log import history


def test_unreachable_online_server_falls_back_to_offline_in_bounded_time(tmp_path, monkeypatch):
    """No network is used: the 'server' is a closed port on localhost."""
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_config(
        [
            "logger=wandb",
            "logger.mode=online",
            "logger.init_timeout_s=5",
            f"paths.output_dir={tmp_path}",
        ]
    )
    started = time.monotonic()
    tracker = Tracker(tmp_path, cfg.logger, {"seed": 0})
    elapsed = time.monotonic() - started
    tracker.log({"ae/loss": 0.5, "ae/step": 1})
    tracker.close()
    assert elapsed < 60
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (tmp_path / "wandb_run_id.txt").read_text().strip()
    assert [row["ae/loss"] for row in history(runs[0] / f"run-{run_id}.wandb")] == [0.5]
    assert '"ae/loss": 0.5' in (tmp_path / "metrics.jsonl").read_text()
