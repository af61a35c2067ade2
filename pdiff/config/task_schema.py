"""The schemas of the task: its network and data, the parameters generated, the base model's
training, the zoo's collection and a zoo of many tasks (task.*, data.*)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING

NUMPY_SEED_MAX = (
    2**32 - 1
)  # numpy's legacy RandomState (MNIST-1D's generator) takes seeds up to 2**32 - 1


class DataName(Enum):
    digits = "digits"
    npz = "npz"
    mnist = "mnist"
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    mnist1d = "mnist1d"


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class ParamConfig:
    layers: list[str] = field(default_factory=lambda: ["bn3", "bn4"])
    k: int = 200
    # true: each vector also carries the running mean and variance of every selected BatchNorm layer
    # (as its checkpoint had them), so runs trained from scratch keep their own statistics and
    # generators generate them
    statistics: bool = False


@dataclass
class SGDConfig:
    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    milestones: list[int] = field(
        default_factory=list
    )  # epochs where lr *= gamma (p-diff); empty: cosine decay
    gamma: float = 0.1


@dataclass
class CollectConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    steps_per_checkpoint: int = 0  # 0: one epoch per checkpoint, as in p-diff
    save_state_every: int = 10  # checkpoints between resume points
    # independent collection runs (K/R checkpoints each; one SLURM array task each): for a layer
    # subset they share the base model and differ in data order; for whole models each run also
    # trains its own from scratch
    runs: int = 1
    # whole models from several runs: permute each run's hidden units onto run 0 (Git Re-Basin)
    align: bool = False


class FamilyName(Enum):
    none = "none"  # one task: the zoo's checkpoints all solve task.name
    # binary class-subset tasks of the data's classes: descriptor = the subset's bit code
    subsets = "subsets"
    # MNIST-1D datasets of many generation settings: descriptor = the settings (10 classes each)
    variants = "variants"


class HeldOutSplit(Enum):
    # held-out codes drawn at random; neither they nor their complements are trained on
    complement = "complement"
    # held out: codes that separate family.pair's two classes; trained: codes that never do
    pair = "pair"


@dataclass
class FamilyConfig:
    """A zoo of many tasks (weights for tasks the zoo never saw): which tasks it trains on, which it
    holds out."""

    name: FamilyName = FamilyName.none
    split: HeldOutSplit = HeldOutSplit.complement
    # which tasks are held out and which are trained on; unset: the run's seed, so every seed of
    # a benchmark holds out its own tasks
    split_seed: int | None = None
    train_tasks: int = 200
    held_out: int = 20  # test tasks: scored once, with task.family.eval_split=test
    val_tasks: int = 20  # validation tasks: settings are chosen on these (eval_split=val)
    seeds: int = 1  # runs per training task (own head initialisation and data order each)
    pair: list[int] = field(
        default_factory=lambda: [0, 1]
    )  # split=pair: the two classes held-out tasks separate
    epochs: int = 6  # SGD epochs on a task's labels before its first checkpoint
    checkpoints: int = 5  # checkpoints per (task, seed), one epoch apart
    # which held-out tasks the evaluate stage scores: test (test tasks, test samples), or val
    # (validation tasks, validation samples: choosing settings)
    eval_split: str = "test"
    k_nearest: int = 5  # the average-of-k-nearest-tasks baseline
    # the fine-tuning sweep from the nearest task (SGD steps on the held-out task's labels); the
    # compute-matched count is added to it
    finetune_steps: list[int] = field(default_factory=lambda: [0, 10, 30, 100])
    task_samples: int = 4000  # family=variants: signals made for each task


@dataclass
class TaskConfig:
    name: str = MISSING
    # {_target_: package.module.Class, **kwargs}: called with input_shape and num_classes added
    # (pdiff.data.tasknets)
    net: Any = field(default_factory=lambda: {"_target_": "pdiff.data.tasknets.digits_cnn"})
    param: ParamConfig = field(default_factory=ParamConfig)
    base: SGDConfig = field(default_factory=SGDConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    precision: Precision = (
        Precision.fp32
    )  # bf16: autocast for base training, collection and evaluation
    compile: bool = (
        False  # torch.compile the network's training forward (base training and collection)
    )
    family: FamilyConfig = field(default_factory=FamilyConfig)


@dataclass
class Mnist1dConfig:
    """MNIST-1D's generation arguments (the rest are the package's defaults); seed 42 is the
    published set."""

    num_samples: int = (
        5000  # the published set (seed 42): its 4,000 training signals are the training set
    )
    train_split: float = 0.8
    seed: int = 42
    # validation and test are generated apart from the training data (same generator of signals,
    # other seeds)
    val_samples: int = 4000
    val_seed: int = 1042
    test_samples: int = 16000
    test_seed: int = 2042


@dataclass
class DataConfig:
    name: DataName = DataName.digits
    root: str | None = None  # torchvision data; MNIST-1D's cache (unset: ~/.cache/pdiff)
    path: str | None = None
    augment: bool = False  # random crop (zero padding 4) and horizontal flip of training images
    rotate_degrees: float = (
        0.0  # with augment: also a random rotation in [-d, d] degrees (p-diff's CIFAR-100)
    )
    eval_batch_size: int = 1000
    # validation carved from the training arrays (digits, npz, torchvision): stratified per class,
    # drawn with split_seed (fixed, not the run's seed, so every run and every design sees the same
    # split)
    val_fraction: float = 0.15
    split_seed: int = 0
    mnist1d: Mnist1dConfig = field(default_factory=Mnist1dConfig)
