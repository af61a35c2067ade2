"""slurm/local-cluster.sh against a machine's own SLURM configuration: refused in one line, never
overwritten.

The test runs `up` in a mount namespace of its own whose /etc/slurm holds a foreign slurm.conf, so
the machine's cluster (and its configuration) are not touched.
"""

import subprocess

from tests.helpers.configs import REPO


def test_a_slurm_conf_the_script_did_not_write_is_refused_and_kept(tmp_path):
    foreign = "ClusterName=site\nSlurmctldHost=head01\n"
    script = (
        f'mount -t tmpfs tmpfs /etc/slurm && printf "{foreign}" >/etc/slurm/slurm.conf && '
        f'bash "{REPO}/slurm/local-cluster.sh" up; status=$?; cat /etc/slurm/slurm.conf; exit $status'
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert (
        len(errors) == 1
        and "/etc/slurm/slurm.conf was not written by slurm/local-cluster.sh" in errors[0]
    ), errors
    assert done.stdout.endswith(foreign)
