"""Cluster tests need the local SLURM cluster (`bash slurm/local-cluster.sh up`); CI requires it."""

import os
import shutil
import subprocess

import pytest


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "SLURM client (sinfo) is not installed: run `bash slurm/local-cluster.sh up`"
    probe = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    ready = probe.returncode == 0 and any(
        state in probe.stdout for state in ("idle", "mix", "alloc")
    )
    if not ready:
        detail = probe.stderr.strip() or probe.stdout.strip()
        return f"the local SLURM cluster is not up ({detail}): run `bash slurm/local-cluster.sh up`"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (`item.rep_call`), for fixtures that keep a failed
    test's files."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def slurm_cluster():
    problem = _cluster_problem()
    if problem is not None:
        if os.environ.get("PDIFF_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"PDIFF_REQUIRE_CLUSTER=1 but {problem}")
        pytest.skip(problem)
