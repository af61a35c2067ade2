"""CIFAR batch files: malformed ones named with the rule they break, absent ones with how to
download."""

import os
import pickle

import numpy as np
import pytest

from pdiff.data.datasets import load_dataset
from pdiff.errors import DataError
from tests.helpers.cifar import write_cifar
from tests.helpers.configs import compose_config


def _cifar10(tmp_path, **files):
    """A CIFAR-10 folder with `files` (name: the object pickled there, or a function of the file's
    bytes giving the bytes written instead) replaced, and the config that reads it."""
    write_cifar(tmp_path, 10, train_per_class=4, test_per_class=2)
    for name, content in files.items():
        path = tmp_path / "cifar-10-batches-py" / name
        if callable(content):
            path.write_bytes(content(path.read_bytes()))
        else:
            with open(path, "wb") as handle:
                pickle.dump(content, handle, protocol=2)
    return compose_config(
        ["task=cifar10_resnet18", f"data.root={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"]
    )


def test_a_cifar_batch_that_names_anything_but_arrays_is_refused_unread(tmp_path):
    cfg = _cifar10(
        tmp_path, test_batch={"data": os.system, "labels": [0]}
    )  # a pickle that would call a function
    with pytest.raises(
        DataError,
        match=r"cifar-10-batches-py/test_batch is not a CIFAR batch \(UnpicklingError: "
        r"refused to load posix.system",
    ):
        load_dataset(cfg.data)


def test_a_cifar_batch_of_the_wrong_shape_is_named(tmp_path):
    cfg = _cifar10(
        tmp_path, data_batch_3={"data": np.zeros((8, 100), dtype=np.uint8), "labels": [0] * 8}
    )
    with pytest.raises(
        DataError, match=r"data_batch_3: data \(8, 100\) and 8 labels; a batch holds N x 3072"
    ):
        load_dataset(cfg.data)


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"data_batch_2": {"data": np.full((4, 3072), 510.0), "labels": [0] * 4}},
            r"data_batch_2: data holds float64 510.0..510.0; pixels must be integers in 0..255 \(uint8\)$",
        ),
        (
            {"data_batch_2": {"data": np.full((4, 3072), 300), "labels": [0] * 4}},
            r"data_batch_2: data holds int64 300..300; pixels must be integers in 0..255",
        ),
        (
            {"data_batch_2": {"data": np.zeros((4, 3072), dtype=np.uint8), "labels": [0.5] * 4}},
            r"data_batch_2: labels of dtype float64 and shape \(4,\); labels must be a list of integer class indices",
        ),
        (
            {"batches.meta": {"label_names": [f"name{c}" for c in range(20)]}},
            r"batches.meta names 20 classes \(label_names\) but the training labels span 0..9: the names must match",
        ),
        (
            {"data_batch_4": {"data": np.zeros((4, 3072), dtype=np.uint8)}},
            r"data_batch_4 has no 'labels' entry \(it holds \['data'\]\)",
        ),
        (
            {"data_batch_1": lambda raw: raw[: len(raw) // 2]},
            r"data_batch_1 ends early \(truncated or empty\)",
        ),
        ({"test_batch": lambda raw: b""}, r"test_batch ends early \(truncated or empty\)"),
    ],
)
def test_a_malformed_cifar_file_is_named_with_the_rule_it_breaks(tmp_path, files, message):
    cfg = _cifar10(tmp_path, **files)
    with pytest.raises(DataError, match=message) as error:
        load_dataset(cfg.data)
    assert "\n" not in str(error.value) and "download" not in str(error.value)


def test_an_empty_cifar_batch_is_read_as_no_images(tmp_path):
    empty = {
        "data": np.zeros((0, 3072), dtype=np.uint8),
        "labels": [],
    }  # protocol 2 pickles b"" as bytes()
    data = load_dataset(_cifar10(tmp_path, data_batch_5=empty).data)
    assert (
        len(data.x_train) + len(data.x_val) == 10 * 4 - 8
    )  # data_batch_5's 8 images are gone, nothing else


def test_an_absent_cifar_file_is_named_with_how_to_download(tmp_path):
    cfg = _cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").unlink()
    with pytest.raises(
        DataError, match=r"No such file or directory: '.*/data_batch_2'\); download it once"
    ):
        load_dataset(cfg.data)
