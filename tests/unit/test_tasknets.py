"""Task networks built from task.net: bad sizes and a user's network refusing its arguments,
refused before any work with one line naming the key and the rule."""

import pytest

from pdiff.data.tasknets import build_task_net, conv1d_bn
from pdiff.errors import ConfigError
from tests.helpers.configs import compose_config


@pytest.mark.parametrize("width", [0, -4])
def test_a_non_positive_cnn_width_names_the_key(tmp_path, width):
    cfg = compose_config([f"task.net.width={width}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(
        ConfigError, match=rf"task.net.width={width} is invalid: must be an integer >= 1"
    ):
        build_task_net(cfg.task.net, (1, 8, 8), 10)


@pytest.mark.parametrize(
    ("task", "key", "sizes", "bad"),
    [("npz_mlp", "hidden", "[16,0]", "0"), ("mnist1d_cnn", "channels", "[8,-1]", "-1")],
)
def test_a_non_positive_layer_size_in_a_list_names_the_key_and_the_entry(
    tmp_path, task, key, sizes, bad
):
    cfg = compose_config(
        [f"task={task}", f"task.net.{key}={sizes}", f"paths.output_dir={tmp_path}"]
    )
    with pytest.raises(
        ConfigError,
        match=rf"task.net.{key}=\[.*\] is invalid: every entry must be an integer >= 1 "
        rf".*, not {bad}",
    ):
        build_task_net(cfg.task.net, (40,), 10)


def test_a_non_positive_kernel_and_a_mismatched_input_are_refused():
    with pytest.raises(
        ConfigError, match=r"task.net.kernel_size=0 is invalid: must be an integer >= 1"
    ):
        conv1d_bn((40,), 10, [8], kernel_size=0)
    with pytest.raises(
        ConfigError,
        match=r"task.net._target_='pdiff.data.tasknets.digits_cnn' needs samples shaped "
        r"\[C, H, W\] with H, W >= 2, but the data's are \(6,\)",
    ):
        build_task_net({"_target_": "pdiff.data.tasknets.digits_cnn"}, (6,), 3)


def test_a_user_network_failing_on_its_arguments_is_one_line_naming_them(tmp_path, monkeypatch):
    (tmp_path / "user_width_net.py").write_text(
        "from torch import nn\n\n\ndef net(input_shape, num_classes, width):\n"
        "    return nn.Linear(input_shape[0], width)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ConfigError,
        match=r"task.net._target_='user_width_net.net' failed to build with width=-4, "
        r"input_shape=\(4,\), num_classes=3 \(RuntimeError: .*\); check the values "
        "of task.net",
    ) as error:
        build_task_net({"_target_": "user_width_net.net", "width": -4}, (4,), 3)
    assert "\n" not in str(error.value)
