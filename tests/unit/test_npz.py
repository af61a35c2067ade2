"""The npz source: any input shape, and every malformed file refused in one line naming data.path
and the rule."""

import numpy as np
import pytest
import torch

from pdiff.data.datasets import check_data_available, load_dataset
from pdiff.errors import ConfigError, DataError
from tests.helpers.configs import compose_config
from tests.helpers.runs import run_sweep


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
    with pytest.raises(DataError, match=r"lacks arrays \['x_test', 'y_test'\]"):
        load_dataset(cfg.data)


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
        DataError, match=r"array x_train holds 5 non-finite values \(NaN or inf\) of 240"
    ):
        load_dataset(_npz(tmp_path / "nan.npz", x_train=x))


def test_npz_fractional_labels_are_refused_and_integral_floats_accepted(tmp_path):
    fractional = np.random.default_rng(2).random(40)
    with pytest.raises(DataError, match=r"y_train holds 40 non-integral labels"):
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
        DataError, match=r"data.path='.*notes.npz' is not a readable .npz archive"
    ) as error:
        load_dataset(cfg.data)
    assert "\n" not in str(error.value)


def test_npz_with_a_single_class_is_refused(tmp_path):
    with pytest.raises(DataError, match="single class"):
        load_dataset(
            _npz(
                tmp_path / "one.npz",
                y_train=np.zeros(40, dtype=int),
                y_test=np.zeros(10, dtype=int),
            )
        )


def _classes(n: int, classes: int = 3) -> np.ndarray:
    return np.arange(n) % classes


def test_a_1d_x_train_is_refused_naming_the_array_its_shape_and_the_rule(tmp_path):
    with pytest.raises(
        DataError,
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
        DataError, match=rf"data.path='.*cut.npz' is {what} .npz archive.*numpy.savez"
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
        DataError,
        match=r"data.path='.*one.npz' is a single array of shape \(4, 2\) \(numpy.save\), "
        "not an .npz archive",
    ):
        load_dataset(cfg.data)


def test_one_hot_labels_are_refused_with_the_file_s_own_shape(tmp_path):
    with pytest.raises(
        DataError,
        match=r"y_train has shape \(40, 3\); labels must be a 1-D array \[N\] of integer "
        "class indices",
    ):
        load_dataset(_npz(tmp_path / "onehot.npz", y_train=np.eye(3)[_classes(40)]))


def test_labels_must_be_class_indices_with_every_class_present(tmp_path):
    stray = _classes(40)
    stray[7] = 10**9  # num_classes would be 10**9 + 1: a 1 TB head
    with pytest.raises(
        DataError,
        match=r"y_train holds label 1000000000, but only 4 distinct labels \(class 3 has "
        r"no sample\); labels must be class indices 0..C-1 with every class present",
    ):
        load_dataset(_npz(tmp_path / "stray.npz", y_train=stray))
    negative = _classes(40)
    negative[0] = -1
    with pytest.raises(
        DataError,
        match=r"y_train holds label -1; labels must be class indices 0, 1, 2, \.\.\. "
        r"\(>= 0\)",
    ):
        load_dataset(_npz(tmp_path / "negative.npz", y_train=negative))
    with pytest.raises(
        DataError,
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
            DataError, match=r"data.path='.*' is a folder: give the .npz file itself"
        ):
            check(cfg.data)


def test_complex_inputs_are_refused_naming_the_dtype(tmp_path):
    x = np.random.default_rng(3).normal(size=(40, 6)) * (1 + 1j)
    with pytest.raises(
        DataError,
        match=r"array x_train has dtype complex128; inputs must be real numbers \(bool, "
        r"int or float dtype\)",
    ):
        load_dataset(_npz(tmp_path / "complex.npz", x_train=x))


def test_a_test_set_below_the_minimum_is_refused_naming_its_count(tmp_path):
    with pytest.raises(
        DataError,
        match=r"x_test has 2 samples; it needs at least 10 for the test accuracies of "
        "the report",
    ):
        load_dataset(_npz(tmp_path / "two.npz", x_test=np.zeros((2, 6)), y_test=np.array([0, 1])))
    data = load_dataset(_npz(tmp_path / "ten.npz", x_test=np.zeros((10, 6)), y_test=_classes(10)))
    assert len(data.y_test) == 10


@pytest.mark.slow
def test_the_sweep_stops_on_a_bad_npz_with_one_error_line_and_no_work(tmp_path):
    rng = np.random.default_rng(0)
    path, out = tmp_path / "flat.npz", tmp_path / "run"
    np.savez(
        path,
        x_train=rng.normal(size=60),
        y_train=np.arange(60) % 3,
        x_test=rng.normal(size=12),
        y_test=np.arange(12) % 3,
    )  # 1-D inputs: once an IndexError traceback in base training
    result = run_sweep(
        [
            "experiment=smoke",
            "threads=1",
            "task=npz_mlp",
            f"data.path={path}",
            f"paths.output_dir={out}",
        ],
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        "pdiff: error: data.path=" in result.stderr
        and "x_train has shape (60,); inputs must be" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (out / "zoo").exists()


def test_an_npz_too_small_for_a_validation_split_names_data_val_fraction(tmp_path):
    cfg = _npz(
        tmp_path / "small.npz", x_train=np.zeros((10, 6)), y_train=_classes(10, 5)
    )  # 2 per class
    with pytest.raises(
        ConfigError,
        match=r"data.val_fraction=0.15 holds out 0 of 10 training samples for validation",
    ):
        load_dataset(cfg)
