"""CIFAR-10 and CIFAR-100 folders in torchvision's own layouts, built offline: each class is a
colour layout of its own (4x4 blocks) plus pixel noise, so the classes differ in what a network
sees, not only in their labels."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

LAYOUTS = {  # classes: (folder, train files, test file, meta file, names key, labels key)
    10: (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        "label_names",
        "labels",
    ),
    100: ("cifar-100-python", ["train"], "test", "meta", "fine_label_names", "fine_labels"),
}


def _images(prototypes: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = prototypes[labels] + rng.normal(0.0, 20.0, size=(len(labels), 3, 32, 32))
    return np.clip(noisy, 0, 255).astype(np.uint8).reshape(len(labels), 3 * 32 * 32)


def _dump(path: Path, entry: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def write_cifar(
    root: Path, classes: int, train_per_class: int, test_per_class: int, seed: int = 0
) -> Path:
    """ROOT/cifar-10-batches-py or ROOT/cifar-100-python with `classes` 10 or 100; returns ROOT."""
    folder, train_files, test_file, meta_file, names_key, labels_key = LAYOUTS[classes]
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(
        40, 215, size=(classes, 3, 4, 4)
    )  # a 4x4 colour layout per class, scaled up to 32x32
    prototypes = np.kron(coarse, np.ones((1, 1, 8, 8)))
    directory = root / folder
    directory.mkdir(parents=True)
    train_labels = rng.permutation(np.repeat(np.arange(classes), train_per_class))
    for index, part in enumerate(np.array_split(train_labels, len(train_files))):
        _dump(
            directory / train_files[index],
            {"data": _images(prototypes, part, rng), labels_key: part.tolist()},
        )
    test_labels = rng.permutation(np.repeat(np.arange(classes), test_per_class))
    _dump(
        directory / test_file,
        {"data": _images(prototypes, test_labels, rng), labels_key: test_labels.tolist()},
    )
    meta = {names_key: [f"class{c}" for c in range(classes)]}
    if classes == 100:
        meta["coarse_label_names"] = [f"superclass{c}" for c in range(20)]
    _dump(directory / meta_file, meta)
    return root


# p-diff's CIFAR job at a size a CPU runs in about a minute: 1 base epoch, K=4 checkpoints one step
# apart, the generator's smoke budget, 4 generated models and a small set of baselines. At this size
# the networks stay at chance accuracy (a ResNet-18 is not usable in eval mode after a few SGD
# steps): it rehearses the job, every stage and file of it, not its accuracy.
REHEARSAL = (
    "experiment=smoke",
    "task.param.k=4",
    "task.base.epochs=1",
    "task.base.milestones=[1]",
    "task.collect.steps_per_checkpoint=1",
    "generate.n=4",
    "evaluate.baselines.noise_scales=[0.01,0.3]",
    "evaluate.baselines.models_per_scale=3",
    "evaluate.baselines.average_of=4",
)
