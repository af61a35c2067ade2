import os
import pickle

import numpy as np
import pytest
import torch

from pdiff.config import DataName
from pdiff.data.augment import augment_batch
from pdiff.data.datasets import check_data_available, digits_test_indices, load_dataset
from pdiff.data.splits import validation_split
from pdiff.data.torchvision_sets import TORCHVISION_SETS
from pdiff.errors import ConfigError, DataError
from pdiff.seeds import Purpose, generator_for
from pdiff.training.batches import _epoch_order, batch_indices
from tests.helpers.cifar import LAYOUTS, write_cifar
from tests.helpers.configs import compose_config


def test_digits_split_is_fixed_stratified_and_disjoint(tmp_path):
    data = load_dataset(compose_config([f"paths.output_dir={tmp_path}"]).data)
    assert data.x_train.shape == (1069, 1, 8, 8) and data.x_val.shape == (189, 1, 8, 8)
    assert data.x_test.shape == (539, 1, 8, 8)
    assert data.num_classes == 10
    test = digits_test_indices()
    assert len(set(test)) == 539 and test == sorted(test)
    counts = torch.bincount(data.y_test, minlength=10)
    assert counts.min() >= 50 and counts.max() <= 56
    assert abs(float(data.x_train.mean())) < 1e-5


def test_npz_any_input_shape(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(
        path,
        x_train=rng.normal(size=(40, 3, 5, 2)),
        y_train=rng.integers(0, 4, 40),
        x_test=rng.normal(size=(10, 3, 5, 2)),
        y_test=rng.integers(0, 4, 10),
    )
    data = load_dataset(
        compose_config(["task=npz_mlp", f"data.path={path}", f"paths.output_dir={tmp_path}"]).data
    )
    assert data.input_shape == (3, 5, 2) and data.x_test.dtype == torch.float32
    assert len(data.y_train) + len(data.y_val) == 40 and len(data.y_val) >= 4


def test_npz_missing_arrays_are_named(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 3)), y_train=np.zeros(2))
    cfg = compose_config(["task=npz_mlp", f"data.path={path}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"lacks arrays \['x_test', 'y_test'\]"):
        load_dataset(cfg.data)


def test_validation_is_carved_per_class_fixed_by_its_seed_and_apart_from_training():
    y = torch.arange(10).repeat_interleave(
        torch.tensor([30, 40, 50, 60, 70, 80, 90, 100, 110, 120])
    )
    train, val = validation_split(y, 0.2, seed=0)
    assert torch.equal(torch.bincount(y[val]), torch.tensor([6, 8, 10, 12, 14, 16, 18, 20, 22, 24]))
    assert not set(train.tolist()) & set(val.tolist()) and len(train) + len(val) == len(y)
    again, other = validation_split(y, 0.2, seed=0), validation_split(y, 0.2, seed=1)
    assert torch.equal(again[1], val) and not torch.equal(other[1], val)
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.01 holds out 0 of 10"):
        validation_split(torch.arange(10), 0.01, seed=0)


def test_batches_cover_each_epoch_once_and_depend_only_on_step():
    seen = torch.cat([batch_indices(step, 100, 10, seed=3) for step in range(10)])
    assert sorted(seen.tolist()) == list(range(100))
    _epoch_order.cache_clear()  # step 13 of 10-row batches of 100 = rows 30..39 of epoch 1's permutation
    assert torch.equal(
        batch_indices(13, 100, 10, 3),
        torch.randperm(100, generator=generator_for(3, Purpose.epoch_order, 1))[30:40],
    )
    assert not torch.equal(batch_indices(10, 100, 10, 3), batch_indices(0, 100, 10, 3))


def test_augment_batch_crops_and_flips_within_bounds():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


def _npz(path, **changes):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(40, 6)),
        "y_train": rng.integers(0, 3, 40),
        "x_test": rng.normal(size=(10, 6)),
        "y_test": rng.integers(0, 3, 10),
        **changes,
    }
    np.savez(path, **arrays)
    return compose_config(
        ["task=npz_mlp", f"data.path={path}", f"paths.output_dir={path.parent / 'run'}"]
    ).data


def test_npz_non_finite_values_are_named_with_their_count(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 6))
    x[3, :4] = np.nan
    x[5, 0] = np.inf
    with pytest.raises(
        ConfigError, match=r"array x_train holds 5 non-finite values \(NaN or inf\) of 240"
    ):
        load_dataset(_npz(tmp_path / "nan.npz", x_train=x))


def test_npz_fractional_labels_are_refused_and_integral_floats_accepted(tmp_path):
    fractional = np.random.default_rng(2).random(40)
    with pytest.raises(ConfigError, match=r"y_train holds 40 non-integral labels"):
        load_dataset(_npz(tmp_path / "float.npz", y_train=fractional))
    data = load_dataset(_npz(tmp_path / "integral.npz", y_train=np.arange(40) % 3 * 1.0))
    assert data.y_train.dtype == torch.int64 and data.y_train[:4].tolist() == [0, 1, 2, 0]


def test_a_file_that_is_not_an_npz_archive_gives_one_line_naming_data_path(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("x_train,y_train\n1,2\n")
    cfg = compose_config(
        ["task=npz_mlp", f"data.path={path}", f"paths.output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(
        ConfigError, match=r"data.path='.*notes.npz' is not a readable .npz archive"
    ) as error:
        load_dataset(cfg.data)
    assert "\n" not in str(error.value)


def test_npz_with_a_single_class_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="single class"):
        load_dataset(
            _npz(
                tmp_path / "one.npz",
                y_train=np.zeros(40, dtype=int),
                y_test=np.zeros(10, dtype=int),
            )
        )


def test_rotation_augmentation_rotates_with_cpu_drawn_angles():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 6:] = 1.0  # a bar right of the centre
    batch = image.expand(64, 1, 9, 9).contiguous()
    plain = augment_batch(batch, torch.Generator().manual_seed(0), pad=0)
    rotated = augment_batch(batch, torch.Generator().manual_seed(0), pad=0, rotate_degrees=90.0)
    again = augment_batch(batch, torch.Generator().manual_seed(0), pad=0, rotate_degrees=90.0)
    assert torch.equal(rotated, again) and not torch.allclose(rotated, plain)
    assert float(rotated.min()) >= 0.0 and float(rotated.max()) <= 1.0 + 1e-6
    assert (
        float(rotated[:, 0, :4, 4].sum() + rotated[:, 0, 5:, 4].sum()) > 0
    )  # some bars turned to vertical


def _classes(n: int, classes: int = 3) -> np.ndarray:
    return np.arange(n) % classes


def test_a_1d_x_train_is_refused_naming_the_array_its_shape_and_the_rule(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"data.path='.*flat.npz': x_train has shape \(40,\); inputs must be an "
        r"array \[N, \*input_shape\] of at least 2 dimensions",
    ):
        load_dataset(_npz(tmp_path / "flat.npz", x_train=np.zeros(40)))


@pytest.mark.parametrize(
    ("content", "what"),
    [(b"", r"an empty file \(0 bytes\), not an"), (b"\x93NUMPY", "not a readable")],
    ids=["0 bytes", "truncated"],
)
def test_an_empty_or_cut_file_is_refused_as_not_an_npz(tmp_path, content, what):
    path = tmp_path / "cut.npz"
    path.write_bytes(content)
    cfg = compose_config(
        ["task=npz_mlp", f"data.path={path}", f"paths.output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(
        ConfigError, match=rf"data.path='.*cut.npz' is {what} .npz archive.*numpy.savez"
    ) as error:
        load_dataset(cfg.data)
    assert "\n" not in str(error.value)


def test_a_single_npy_array_is_refused_as_not_an_npz(tmp_path):
    path = tmp_path / "one.npz"
    with path.open("wb") as file:
        np.save(file, np.zeros((4, 2)))
    cfg = compose_config(
        ["task=npz_mlp", f"data.path={path}", f"paths.output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(
        ConfigError,
        match=r"data.path='.*one.npz' is a single array of shape \(4, 2\) \(numpy.save\), "
        "not an .npz archive",
    ):
        load_dataset(cfg.data)


def test_one_hot_labels_are_refused_with_the_file_s_own_shape(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"y_train has shape \(40, 3\); labels must be a 1-D array \[N\] of integer "
        "class indices",
    ):
        load_dataset(_npz(tmp_path / "onehot.npz", y_train=np.eye(3)[_classes(40)]))


def test_labels_must_be_class_indices_with_every_class_present(tmp_path):
    stray = _classes(40)
    stray[7] = 10**9  # num_classes would be 10**9 + 1: a 1 TB head
    with pytest.raises(
        ConfigError,
        match=r"y_train holds label 1000000000, but only 4 distinct labels \(class 3 has "
        r"no sample\); labels must be class indices 0..C-1 with every class present",
    ):
        load_dataset(_npz(tmp_path / "stray.npz", y_train=stray))
    negative = _classes(40)
    negative[0] = -1
    with pytest.raises(
        ConfigError,
        match=r"y_train holds label -1; labels must be class indices 0, 1, 2, \.\.\. "
        r"\(>= 0\)",
    ):
        load_dataset(_npz(tmp_path / "negative.npz", y_train=negative))
    with pytest.raises(
        ConfigError,
        match=r"y_test holds label 5, a class no training sample has \(y_train's classes "
        r"are 0..2\)",
    ):
        load_dataset(_npz(tmp_path / "unseen.npz", y_train=_classes(40), y_test=_classes(10, 6)))


def test_a_folder_as_data_path_is_named_a_folder(tmp_path):
    cfg = compose_config(
        ["task=npz_mlp", f"data.path={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"]
    )
    for check in (check_data_available, load_dataset):
        with pytest.raises(
            ConfigError, match=r"data.path='.*' is a folder: give the .npz file itself"
        ):
            check(cfg.data)


def test_complex_inputs_are_refused_naming_the_dtype(tmp_path):
    x = np.random.default_rng(3).normal(size=(40, 6)) * (1 + 1j)
    with pytest.raises(
        ConfigError,
        match=r"array x_train has dtype complex128; inputs must be real numbers \(bool, "
        r"int or float dtype\)",
    ):
        load_dataset(_npz(tmp_path / "complex.npz", x_train=x))


def test_a_test_set_below_the_minimum_is_refused_naming_its_count(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"x_test has 2 samples; it needs at least 10 for the test accuracies of "
        "the report",
    ):
        load_dataset(_npz(tmp_path / "two.npz", x_test=np.zeros((2, 6)), y_test=np.array([0, 1])))
    data = load_dataset(_npz(tmp_path / "ten.npz", x_test=np.zeros((10, 6)), y_test=_classes(10)))
    assert len(data.y_test) == 10


def test_an_npz_too_small_for_a_validation_split_names_data_val_fraction(tmp_path):
    cfg = _npz(
        tmp_path / "small.npz", x_train=np.zeros((10, 6)), y_train=_classes(10, 5)
    )  # 2 per class
    with pytest.raises(
        ConfigError,
        match=r"data.val_fraction=0.15 holds out 0 of 10 training samples for validation",
    ):
        load_dataset(cfg)


def test_a_torchvision_folder_without_its_files_is_one_line_naming_data_root(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)  # the folder is there, its files are not
    cfg = compose_config(
        ["task=mnist_cnn", f"data.root={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(
        ConfigError,
        match=r"data.root='.*': mnist at .*MNIST/raw cannot be read \(RuntimeError: .*\); "
        r"download it once",
    ) as error:
        load_dataset(cfg.data)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("classes, per_class", [(10, 6), (100, 2)])
def test_cifar_folders_in_torchvision_layouts_load_with_their_classes_and_images(
    tmp_path, classes, per_class
):
    write_cifar(tmp_path, classes, train_per_class=per_class * 2, test_per_class=per_class)
    cfg = compose_config(
        [
            f"task=cifar{classes}_resnet18",
            f"data.root={tmp_path}",
            "data.val_fraction=0.5",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    data = load_dataset(cfg.data)
    assert data.num_classes == classes and data.input_shape == (3, 32, 32)
    assert len(data.x_train) == len(data.x_val) == len(data.x_test) == classes * per_class
    assert torch.bincount(data.y_test, minlength=classes).tolist() == [per_class] * classes
    folder = tmp_path / LAYOUTS[classes][0]
    with open(folder / LAYOUTS[classes][2], "rb") as handle:
        raw = pickle.load(handle)
    first = torch.from_numpy(raw["data"][:1].reshape(1, 3, 32, 32).astype(np.float32) / 255.0)
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1) for v in TORCHVISION_SETS[DataName(f"cifar{classes}")][2:]
    )
    assert torch.allclose(
        data.x_test[:1], (first - mean) / std
    )  # channel-major bytes, per-channel z-scores
    assert int(data.y_test[0]) == raw[LAYOUTS[classes][5]][0]


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
        ConfigError, match=r"No such file or directory: '.*/data_batch_2'\); download it once"
    ):
        load_dataset(cfg.data)
