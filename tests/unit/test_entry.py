"""The entry points' shared start: argv as Hydra should see it, and one line for what Hydra cannot
parse."""

from __future__ import annotations

import pytest

from pdiff.entry import prepare_argv


def test_launcher_arguments_flags_and_whole_nodes_are_rewritten(tmp_path):
    argv = [
        "sweep.py",
        "--local_rank=1",
        "--wait",
        "task.net={_target_: mymod.Net}",
        f"paths.output_dir={tmp_path}",
    ]
    assert prepare_argv(argv, flags={"--wait": "cluster.wait=true"}) == [
        "sweep.py",
        "task.net=null",
        "task.net={_target_: mymod.Net}",
        f"paths.output_dir={tmp_path}",
        "cluster.wait=true",
    ]


@pytest.mark.parametrize(
    "argument",
    ["paths.output_dir=/tmp/é", "paths.output_dir=/tmp/run\nnext", "paths.output_dir=/tmp/a=b"],
)
def test_an_override_hydra_cannot_parse_gets_one_line_with_the_quoting_that_fixes_it(
    argument, capsys
):
    with pytest.raises(SystemExit) as exit_:
        prepare_argv(["sweep.py", argument])
    message = str(exit_.value.code)
    key, _, value = argument.partition("=")
    assert message.startswith(f"pdiff: error: the override {argument!r} cannot be parsed")
    assert f"'{key}=\"{value}\"'" in message


def test_a_quoted_value_passes():
    assert (
        prepare_argv(["sweep.py", 'paths.output_dir="/tmp/my run"'])[1]
        == 'paths.output_dir="/tmp/my run"'
    )
