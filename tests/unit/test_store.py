import json

import pytest
import torch

from pdiff.data.tasknets import digits_cnn
from pdiff.errors import ZooError
from pdiff.zoo.params import select_parameters
from pdiff.zoo.store import ZOO_META, ZOO_TENSORS, ParamZoo, load_base_weights, save_base_weights
from tests.helpers.runs import write_zoo


@pytest.fixture
def zoo() -> ParamZoo:
    spec = select_parameters(digits_cnn((1, 8, 8), 10, 8), ["bn3", "bn4"])
    return ParamZoo(
        torch.randn(7, spec.dim),
        torch.rand(7, dtype=torch.float64) * 100,
        spec,
        {"task": "t", "seed": 3},
    )


def test_save_load_round_trip(tmp_path, zoo):
    write_zoo(tmp_path, zoo)
    loaded = ParamZoo.load(tmp_path)
    assert torch.equal(loaded.vectors, zoo.vectors) and torch.equal(
        loaded.val_accuracy, zoo.val_accuracy
    )
    assert loaded.spec == zoo.spec and loaded.meta["seed"] == 3 and loaded.k == 7
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files
    assert json.loads((tmp_path / ZOO_META).read_text())["spec"][0]["name"] == "bn3.weight"


def test_corrupted_tensor_file_is_detected(tmp_path, zoo):
    write_zoo(tmp_path, zoo)
    raw = bytearray((tmp_path / ZOO_TENSORS).read_bytes())
    raw[-5] ^= 0xFF
    (tmp_path / ZOO_TENSORS).write_bytes(bytes(raw))
    with pytest.raises(ZooError, match="checksum"):
        ParamZoo.load(tmp_path)


def test_missing_or_broken_metadata_is_reported(tmp_path, zoo):
    with pytest.raises(ZooError, match="run stage=collect first"):
        ParamZoo.load(tmp_path)
    write_zoo(tmp_path, zoo)
    (tmp_path / ZOO_META).write_text("{not json")
    with pytest.raises(ZooError, match="not valid JSON"):
        ParamZoo.load(tmp_path)


def test_base_weights_round_trip(tmp_path):
    model = digits_cnn((1, 8, 8), 10, 8)
    save_base_weights(tmp_path, model.state_dict())
    loaded = load_base_weights(tmp_path)
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_runs_merge_streamed_into_a_valid_safetensors_zoo(tmp_path, zoo, monkeypatch):
    from safetensors.torch import load_file

    from pdiff import atomic

    monkeypatch.setattr(
        atomic, "STREAM_BYTES", 3 * zoo.spec.dim * 4
    )  # a few rows per block: several blocks
    runs = []
    for index, rows in enumerate((slice(0, 4), slice(4, 5), slice(5, None))):
        path = tmp_path / f"run{index}.safetensors"
        atomic.write_safetensors(
            path, {"params": zoo.vectors[rows], "val_accuracy": zoo.val_accuracy[rows].double()}
        )
        runs.append(path)
    merged = ParamZoo.merge(tmp_path / "zoo", runs, zoo.spec, {"task": "t"})
    assert torch.equal(merged.vectors, zoo.vectors)
    stored = load_file(str(tmp_path / "zoo" / ZOO_TENSORS))  # the safetensors library reads it back
    assert torch.equal(stored["params"], zoo.vectors) and torch.equal(
        stored["val_accuracy"], zoo.val_accuracy.double()
    )
    loaded = ParamZoo.load(tmp_path / "zoo")
    assert (
        loaded.k == zoo.k
        and loaded.meta["task"] == "t"
        and torch.equal(loaded.vectors, zoo.vectors)
    )
