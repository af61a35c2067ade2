import torch

from pdiff.distributed import detect, strip_launcher_args
from pdiff.engine import deepspeed_config
from pdiff.noise import BatchNoise
from tests.conftest import compose_config


def test_rank_slices_of_batch_noise_join_into_the_whole_batch():
    whole = BatchNoise.whole(seed=3, step=7, size=8)
    expected_n, expected_t = whole.randn(5), whole.randint(100)
    parts = [BatchNoise(3, 7, 8, slice(i * 2, i * 2 + 2)) for i in range(4)]
    drawn = [(p.randn(5), p.randint(100)) for p in parts]
    assert torch.equal(torch.cat([n for n, _ in drawn]), expected_n)
    assert torch.equal(torch.cat([t for _, t in drawn]), expected_t)


def test_detect_reads_torchrun_slurm_or_nothing():
    torchrun = detect({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1",
                       "MASTER_PORT": "1234"})
    assert (torchrun.rank, torchrun.world_size, torchrun.master_addr, torchrun.master_port) == (1, 2, "10.0.0.1", 1234)
    slurm = detect({"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "77",
                    "SLURM_JOB_NODELIST": "localhost"})
    assert (slurm.rank, slurm.local_rank, slurm.world_size, slurm.launcher) == (3, 1, 4, "slurm")
    assert slurm.master_port == 15077 and slurm.master_addr == "localhost"
    one_task = detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert not one_task.distributed and one_task.is_main
    assert not detect({}).distributed


def test_launcher_arguments_are_stripped_before_hydra():
    assert strip_launcher_args(["sweep.py", "--local_rank=1", "stage=train"]) == ["sweep.py", "stage=train"]
    assert strip_launcher_args(["sweep.py", "--local_rank", "0", "seed=1"]) == ["sweep.py", "seed=1"]


def test_deepspeed_json_comes_from_the_trainer_node(tmp_path):
    cfg = compose_config(["trainer=deepspeed", "trainer.zero_stage=3", "trainer.grad_accum=2",
                          "trainer.offload_optimizer=true", "trainer.offload_params=true", "trainer.precision=bf16",
                          f"paths.output_dir={tmp_path}"])
    ds = deepspeed_config(cfg.trainer, cfg.ae.optim, micro_batch=25, world_size=2)
    assert ds["train_batch_size"] == 100 and ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["optimizer"]["params"]["lr"] == cfg.ae.optim.lr and ds["gradient_clipping"] == 1.0
