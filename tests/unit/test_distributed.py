import errno
import os
import socket
import time

import pytest
import torch

from pdiff.config import validate
from pdiff.config.command_line import strip_launcher_args
from pdiff.diffusion.noise import BatchNoise
from pdiff.errors import ConfigError, RendezvousError
from pdiff.training import distributed, rendezvous
from pdiff.training.deepspeed_engine import deepspeed_config
from pdiff.training.devices import check_precision
from pdiff.training.distributed import DEFAULT_PORT, detect, free_port
from tests.helpers.configs import compose_config


def test_rank_slices_of_batch_noise_join_into_the_whole_batch():
    whole = BatchNoise.whole(seed=3, step=7, size=8)
    expected_n, expected_t = whole.randn(5), whole.randint(100)
    parts = [BatchNoise(3, 7, 8, slice(i * 2, i * 2 + 2)) for i in range(4)]
    drawn = [(p.randn(5), p.randint(100)) for p in parts]
    assert torch.equal(torch.cat([n for n, _ in drawn]), expected_n)
    assert torch.equal(torch.cat([t for _, t in drawn]), expected_t)


def test_detect_reads_torchrun_slurm_or_nothing():
    torchrun = detect(
        {
            "RANK": "1",
            "LOCAL_RANK": "1",
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "1234",
        }
    )
    assert (torchrun.rank, torchrun.world_size, torchrun.master_addr, torchrun.master_port) == (
        1,
        2,
        "10.0.0.1",
        1234,
    )
    slurm = detect(
        {
            "SLURM_PROCID": "3",
            "SLURM_LOCALID": "1",
            "SLURM_NTASKS": "4",
            "SLURM_JOB_ID": "77",
            "SLURM_JOB_NODELIST": "localhost",
        }
    )
    assert (slurm.rank, slurm.local_rank, slurm.world_size, slurm.launcher) == (3, 1, 4, "slurm")
    assert slurm.master_addr == "localhost"
    assert (
        detect(dict(_slurm_task(77, 3), MASTER_PORT="4321")).master_port == 4321
    )  # the user's port wins
    one_task = detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert not one_task.distributed and one_task.is_main
    assert not detect({}).distributed


@pytest.mark.parametrize(
    "launcher",
    [
        {"RANK": "0", "WORLD_SIZE": "2"},
        {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "localhost"},
        {},
    ],
)
@pytest.mark.parametrize("port", ["99999", "abc", "0"])
def test_a_master_port_that_is_no_port_is_named_in_one_line(launcher, port):
    with pytest.raises(
        RendezvousError,
        match=rf"environment variable MASTER_PORT='{port}' is invalid: it must be an "
        r"integer in \[1, 65535\]",
    ):
        detect({**launcher, "MASTER_PORT": port})
    with pytest.raises(
        RendezvousError,
        match=r"environment variable WORLD_SIZE='two' is invalid: it must be an "
        r"integer >= 1",
    ):
        detect({"RANK": "0", "WORLD_SIZE": "two"})
    assert (
        detect({"MASTER_PORT": "12345"}).master_port == 12345
    )  # a single process's group of one uses it


def test_a_run_with_a_bad_master_port_is_refused_before_it_writes(tmp_path, monkeypatch):
    from pdiff.pipeline.run import run_pipeline

    monkeypatch.setenv("MASTER_PORT", "abc")
    with pytest.raises(RendezvousError, match="MASTER_PORT='abc'"):
        run_pipeline(compose_config(["experiment=smoke", f"paths.output_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run").exists()


def _slurm_task(job_id: int, rank: int, tasks: int = 4) -> dict[str, str]:
    return {
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank % 2),
        "SLURM_NTASKS": str(tasks),
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NODELIST": "localhost",
    }


def test_slurm_ranks_of_one_job_agree_on_a_free_port_that_other_jobs_do_not_share(monkeypatch):
    monkeypatch.setattr(
        distributed, "_first_host", lambda nodelist: nodelist
    )  # no scontrol call per detect()
    for job_id in (1, 77, 4096, 123_456):
        ports = {detect(_slurm_task(job_id, rank)).master_port for rank in range(4)}
        assert len(ports) == 1, (
            job_id,
            ports,
        )  # every rank finds the same rendezvous without talking
    ports = [detect(_slurm_task(job_id, 0)).master_port for job_id in range(1, 2001)]
    assert len(set(ports)) == len(ports)  # two jobs running side by side on a node never collide
    assert all(
        1024 < port < 65536 and port != DEFAULT_PORT for port in ports
    )  # unprivileged, not torchrun's
    port = detect(_slurm_task(77, 0)).master_port
    with socket.socket() as sock:  # nothing else on this machine holds it: a rendezvous can bind it
        sock.bind(("127.0.0.1", port))


def test_launcher_arguments_are_stripped_before_hydra():
    assert strip_launcher_args(["sweep.py", "--local_rank=1", "stage=train"]) == [
        "sweep.py",
        "stage=train",
    ]
    assert strip_launcher_args(["sweep.py", "--local_rank", "0", "seed=1"]) == [
        "sweep.py",
        "seed=1",
    ]


def test_deepspeed_json_comes_from_the_trainer_node(tmp_path):
    cfg = compose_config(
        [
            "trainer=deepspeed",
            "trainer.zero_stage=3",
            "trainer.grad_accum=2",
            "trainer.offload_optimizer=true",
            "trainer.offload_params=true",
            "trainer.precision=bf16",
            f"paths.output_dir={tmp_path}",
        ]
    )
    ds = deepspeed_config(cfg.trainer, cfg.ae.optim, micro_batch=25, world_size=2)
    assert ds["train_batch_size"] == 100 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["optimizer"]["params"]["lr"] == cfg.ae.optim.lr and ds["gradient_clipping"] == 1.0


def test_each_chain_job_asks_for_what_it_uses(tmp_path):
    from pdiff.cluster.chain import _executor
    from pdiff.cluster.jobs import Job

    gpu = compose_config(
        [
            "cluster=gpu",
            "trainer=deepspeed",
            "cluster.nodes=2",
            "cluster.gpus_per_node=4",
            "cluster.tasks_per_node=4",
            f"paths.output_dir={tmp_path}",
        ]
    )
    validate(gpu)
    asked = {job: _executor(gpu.cluster, tmp_path, job, [])._executor.parameters for job in Job}
    assert asked[Job.train]["nodes"] == 2 and asked[Job.train]["ntasks_per_node"] == 4
    assert asked[Job.train]["gpus_per_node"] == 4
    assert all(
        asked[job]["gpus_per_node"] == 1 and asked[job]["nodes"] == 1
        for job in (Job.base, Job.collect, Job.report)
    )
    cpu_only = compose_config(
        ["cluster=gpu", "cluster.gpu_jobs=[train]", f"paths.output_dir={tmp_path}"]
    )
    asked = {
        job: _executor(cpu_only.cluster, tmp_path, job, [])._executor.parameters for job in Job
    }
    assert all("gpus_per_node" not in asked[job] for job in (Job.base, Job.collect, Job.report))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["cluster=gpu", "trainer=deepspeed", "cluster.tasks_per_node=2"],
            r"cluster.tasks_per_node=2 is invalid: must be <= cluster.gpus_per_node=1: "
            r"each training rank needs its own",
        ),
        (
            ["cluster.nodes=2"],
            r"cluster.nodes=2 is invalid: a training job on several nodes needs trainer=deepspeed",
        ),
        (
            ["cluster.gpu_jobs=[train]"],
            r"cluster.gpu_jobs=\['train'\] is invalid: needs cluster.gpus_per_node >= 1",
        ),
        (
            ["cluster=gpu", "cluster.gpu_jobs=[merge]"],
            r"cluster.gpu_jobs=\['merge'\] is invalid: may list",
        ),
    ],
)
def test_cluster_resources_are_checked_before_submission(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config([*overrides, f"paths.output_dir={tmp_path}"]))


def test_the_gpu_preset_asks_for_cuda_and_fp16_is_checked_where_it_runs(tmp_path):
    cfg = compose_config(
        [
            "cluster=gpu",
            "trainer=deepspeed",
            "trainer.precision=fp16",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert cfg.device.value == "cuda"
    validate(cfg)  # a GPU-less login node submits it; the job itself checks
    with pytest.raises(
        ConfigError, match=r"trainer.precision=fp16 is invalid on this job's device \(cpu\)"
    ):
        check_precision(cfg.trainer, torch.device("cpu"))


def test_a_rendezvous_host_that_does_not_resolve_is_named_at_once():
    started = time.monotonic()
    with pytest.raises(
        RendezvousError,
        match=r"rank 1 on host .*: the rendezvous host 'no-such-node.invalid' "
        r"\(MASTER_ADDR\) does not resolve here: .* set MASTER_ADDR",
    ):
        rendezvous.check(1, "no-such-node.invalid", 29500, "MASTER_ADDR", nodes=2, bind_port=False)
    assert time.monotonic() - started < 5


def test_a_loopback_rendezvous_for_ranks_on_several_hosts_is_refused():
    with pytest.raises(
        RendezvousError,
        match=r"'127.0.0.1' \(MASTER_ADDR\) is this host's loopback, but the job "
        r"runs on 2 hosts",
    ):
        rendezvous.check(1, "127.0.0.1", 29500, "MASTER_ADDR", nodes=2, bind_port=False)
    rendezvous.check(
        1, "127.0.0.1", free_port(), "MASTER_ADDR", nodes=1, bind_port=False
    )  # one host: fine


def test_a_host_whose_own_name_resolves_to_loopback_names_gloo_socket_ifname(monkeypatch):
    monkeypatch.setattr(
        rendezvous, "resolve", lambda host: ["10.1.2.3"] if host == "master" else ["127.0.1.1"]
    )
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    with pytest.raises(
        RendezvousError,
        match=r"this host's name '.*' resolves to 127.0.1.1, so gloo would listen on "
        r"127.0.0.1 .* or set GLOO_SOCKET_IFNAME",
    ):
        rendezvous.check(1, "master", 29500, "MASTER_ADDR", nodes=2, bind_port=False)
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth0")  # gloo then takes that interface's address
    monkeypatch.setattr(rendezvous, "_check_reachable", lambda *args: None)
    rendezvous.check(1, "master", 29500, "MASTER_ADDR", nodes=2, bind_port=False)


def test_rank_0_on_another_host_than_the_rendezvous_address_or_a_taken_port_is_named(monkeypatch):
    monkeypatch.setenv(
        "GLOO_SOCKET_IFNAME", "lo"
    )  # this machine's own name may resolve to loopback
    with pytest.raises(
        RendezvousError,
        match=r"rendezvous address 198.51.100.7 \(MASTER_ADDR\) is not one of this "
        r"host's addresses: set MASTER_ADDR to rank 0's host",
    ):
        rendezvous.check(
            0, "198.51.100.7", 29500, "MASTER_ADDR", nodes=2, bind_port=True
        )  # bind only: no packet
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            RendezvousError,
            match=rf"the rendezvous port {port} is already in use on host .*: set "
            "MASTER_PORT to a free port",
        ):
            rendezvous.check(0, "127.0.0.1", port, "MASTER_ADDR", nodes=1, bind_port=True)


def test_a_rendezvous_address_that_stays_unreachable_is_named_after_the_retry_window(monkeypatch):
    monkeypatch.setattr(rendezvous, "REACH_TIMEOUT_S", 1.0)
    monkeypatch.setattr(rendezvous, "resolve", lambda host: ["10.9.9.9"])

    def unreachable(self, address):
        raise OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH))

    monkeypatch.setattr(socket.socket, "connect", unreachable)
    with pytest.raises(
        RendezvousError,
        match=r"rank 1 on host .* cannot reach the rendezvous address node1 "
        r"\(10.9.9.9:29500, first node\) after 1 s: No route to host",
    ):
        rendezvous.check(1, "node1", 29500, "first node", nodes=2, bind_port=False)


def test_slurm_ranks_take_master_addr_when_set_and_say_where_the_address_came_from(monkeypatch):
    monkeypatch.setattr(distributed, "_first_host", lambda nodelist: nodelist.split(",")[0])
    task = dict(_slurm_task(5, 1), SLURM_JOB_NODELIST="node1,node2", SLURM_JOB_NUM_NODES="2")
    first = detect(task)
    assert (first.master_addr, first.nodes) == ("node1", 2)
    assert first.address_from == "the first node of SLURM_JOB_NODELIST=node1,node2"
    chosen = detect(dict(task, MASTER_ADDR="10.0.0.5"))
    assert (chosen.master_addr, chosen.address_from) == ("10.0.0.5", "MASTER_ADDR")
