import torch

from pdiff.collect import collect_checkpoints
from pdiff.data import load_dataset
from pdiff.params import read_vector, select_parameters
from pdiff.tasknets import digits_cnn
from tests.conftest import compose_config


def _setup(tmp_path):
    cfg = compose_config(["experiment=smoke", f"paths.output_dir={tmp_path}"])
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = digits_cnn(1, 10, 8)
    return cfg, data, model, select_parameters(model, ["bn3", "bn4"])


def test_collection_trains_only_the_subset_and_freezes_bn_statistics(tmp_path):
    cfg, data, model, spec = _setup(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vectors, accuracy = collect_checkpoints(model, spec, data, cfg.task.collect, 6, False, 1, tmp_path / "s.pt")
    assert vectors.shape == (6, spec.dim) and accuracy.shape == (6,)
    assert not torch.equal(vectors[0], vectors[-1])
    after = model.state_dict()
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        assert changed == (name in spec.names), name  # running stats and other weights stay put
    assert torch.equal(read_vector(model, spec), vectors[-1])


def test_interrupted_collection_resumes_to_the_same_checkpoints(tmp_path):
    cfg, data, model, spec = _setup(tmp_path)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    full, full_acc = collect_checkpoints(model, spec, data, cfg.task.collect, 10, False, 1, tmp_path / "a.pt")
    model.load_state_dict(start)
    collect_checkpoints(model, spec, data, cfg.task.collect, 5, False, 1, tmp_path / "b.pt")  # killed after 5
    model.load_state_dict(start)  # a fresh process: only the files on disk remain
    resumed, resumed_acc = collect_checkpoints(model, spec, data, cfg.task.collect, 10, False, 1, tmp_path / "b.pt")
    assert torch.equal(resumed, full) and torch.equal(resumed_acc, full_acc)
