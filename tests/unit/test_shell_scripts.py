"""The shell scripts (slurm/*.sh, slurm/jobs/*.sh, scripts/*.sh) run under `set -e`: a function whose last command
is `a && b` returns 1 when `a` is false, and its caller then ends the script without a word (a first
run of two-hosts.sh did, issue 36). Each script parses, and no multi-line function ends that way."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.helpers.configs import REPO

SCRIPTS = sorted([*REPO.glob("slurm/**/*.sh"), *REPO.glob("scripts/*.sh")])
FUNCTION = re.compile(r"^(?P<name>[a-z_][a-z_0-9]*)\(\) \{(?P<inline>.*)$")


def functions(text: str) -> dict[str, list[str]]:
    """Each multi-line function's statements (comments and blank lines dropped), by name. One-line
    functions are predicates (`alive`, `ctld_up`), meant to fail."""
    found, name, body = {}, None, []
    for line in text.splitlines():
        if name is None:
            match = FUNCTION.match(line)
            if match and not match["inline"].split("#")[0].strip():
                name, body = match["name"], []
        elif line == "}":
            found[name], name = body, None
        elif (statement := line.split(" #")[0].strip()) and not statement.startswith("#"):
            body.append(statement)
    return found


def last_commands(body: list[str]) -> list[str]:
    """The statements that can run last: the last one, or, when the body ends on a multi-line `if`,
    each branch's."""
    if not body or body[-1] != "fi":
        return body[-1:]
    depth, branches, branch = 0, [], []
    for statement in reversed(body[:-1]):  # back to the `if` that this `fi` closes
        opens, closes = (
            statement.startswith("if ") and not statement.endswith("fi"),
            statement == "fi",
        )
        if depth == 0 and (opens or statement.startswith(("else", "elif "))):
            branches.append(list(reversed(branch)))
            branch = []
            if opens:
                break
            continue
        depth += closes - opens
        branch.append(statement)
    return [command for statements in branches for command in last_commands(statements)]


def ends_on_an_and_list(body: list[str]) -> bool:
    """A statement that can run last is `a && b` (`{ ... }` groups read as one command) with no `||
    fallback`."""
    grouped = (re.sub(r"\{[^{}]*\}", "{}", command) for command in last_commands(body))
    return any("&&" in command and "||" not in command for command in grouped)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_scripts_parse_and_no_function_ends_on_an_and_list(script):
    assert (
        subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0
    )
    bad = [
        name for name, body in functions(script.read_text()).items() if ends_on_an_and_list(body)
    ]
    assert not bad, (
        f"{script.name}: {bad} end on `a && b`, which ends the caller under set -e when a is false"
    )


def test_the_first_run_bug_of_issue_36_is_found():
    before = """write_files() {
  if cmp -s new conf; then
    rm new
  else
    mv new conf
    alive pidfile slurmctld && { client scontrol reconfigure || true; }
  fi
}
"""
    after = before.replace(
        "alive pidfile slurmctld && { client", "if alive pidfile slurmctld; then client"
    )
    after = after.replace("|| true; }", "|| true; fi")
    assert ends_on_an_and_list(functions(before)["write_files"])
    assert not ends_on_an_and_list(functions(after)["write_files"])
    assert ends_on_an_and_list(["mkdir -p x", "du -sh x && ls x"])
