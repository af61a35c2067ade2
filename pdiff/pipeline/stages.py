"""The four stages, each reading the previous stage's files and writing its own (resumable,
skip-if-done).

DIR/zoo        collect:  base_model.safetensors, runs/, zoo.safetensors + zoo.json (resume:
*_state.pt) DIR/generator  train:    the design's weights + generator.json DIR/generated  generate:
params.safetensors + generated.json DIR/eval       evaluate (pdiff/pipeline/evaluate_stage.py):
predictions, memorisation table; then DIR/report.*

zoo.json, generator.json and generated.json, each written last, record the stage's inputs
(RECORD_KEY) and the digests of the files later stages read; new generated models move the old
evaluation and report to superseded/.
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from pdiff import atomic
from pdiff.config import FamilyName, Precision, SamplerName, Stage, to_container
from pdiff.data.augment import Augmentation
from pdiff.data.datasets import Dataset, load_dataset
from pdiff.data.tasknets import build_task_net
from pdiff.errors import GeneratorError, ZooError
from pdiff.evaluation.costs import RECALIBRATION_KEY, run_key
from pdiff.generators import design_class, generator_exists
from pdiff.generators.base import Conditioning, verify_generator
from pdiff.heldout.collect import TaskRecipe, collect_tasks, run_pairs, task_network
from pdiff.heldout.families import SubsetFamily, has_family, task_family
from pdiff.pipeline.stage_dirs import (
    RECORD_KEY,
    changed_inputs,
    claim_stage_dir,
    inputs_diff,
    stage_inputs,
    supersede,
)
from pdiff.seeds import Purpose, derive_seed, generator_for
from pdiff.tracking import Tracker
from pdiff.training import distributed
from pdiff.training.devices import Execution, memory_format
from pdiff.zoo.align import align_runs
from pdiff.zoo.collect import checkpoint_interval, collect_checkpoints, train_base
from pdiff.zoo.params import ParamSpec, is_whole_model, select_parameters
from pdiff.zoo.store import (
    BASE_WEIGHTS,
    ParamZoo,
    load_base_weights,
    run_path,
    run_sizes,
    save_base_weights,
)

log = logging.getLogger(__name__)
STAGE_ORDER = (Stage.collect, Stage.train, Stage.generate, Stage.evaluate)
GENERATED_PARAMS = "params.safetensors"
GENERATED_META = "generated.json"
EVALUATE_TIMINGS = ("evaluate", RECALIBRATION_KEY)  # timings.json keys the evaluate stage measures
TIMINGS_FILE = "timings.json"
PARAMS_DIGEST = "params_sha256"  # generated.json: the digest of the models it describes
REPORT_FILES = (
    "report.json",
    "report.md",
)  # with DIR/*.png, what the evaluate stage writes beside eval/


@dataclass
class Run:
    """One pipeline run: its config, output folder, tracker and per-stage timings."""

    cfg: DictConfig
    output_dir: Path
    tracker: Tracker
    env: distributed.DistEnv = field(default_factory=distributed.DistEnv)
    device: torch.device = field(
        default_factory=lambda: torch.device("cpu")
    )  # resolved once (training.devices)
    timings: dict[str, float] = field(default_factory=dict)
    _data: Dataset | None = None

    @property
    def data(self) -> Dataset:
        """The task's data on the run's device (loaded and moved once)."""
        if self._data is None:
            data = load_dataset(self.cfg.data)
            self._data = data.to(self.device, memory_format(self.device, data.x_train))
        return self._data

    @property
    def task_execution(self) -> Execution:
        """How the task network runs: task.precision (autocast) and task.compile."""
        return Execution(Precision(self.cfg.task.precision), bool(self.cfg.task.compile))

    def task_autocast(self):
        """Autocast for the task network's forward-only passes (task.precision) on this run's
        device."""
        return self.task_execution.autocast(self.device)

    def dir(self, name: str) -> Path:
        path = self.output_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record_time(self, key: str, seconds: float) -> None:
        """Add `key` to timings.json."""
        self.timings[key] = seconds
        self._edit_times(lambda saved: {**saved, key: round(seconds, 6)})

    def saved_times(self) -> dict[str, float]:
        """timings.json as it is on disk."""
        path = self.output_dir / TIMINGS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def forget_times(self, keys: tuple[str, ...]) -> None:
        """Drop `keys` from timings.json (measurements of outputs that are being replaced)."""
        for key in keys:
            self.timings.pop(key, None)
        self._edit_times(
            lambda saved: {key: value for key, value in saved.items() if key not in keys}
        )

    def _edit_times(self, edit: Callable[[dict], dict]) -> None:
        """Rewrite timings.json as `edit` of its contents, under a lock (collection runs of one zoo
        may finish at once, as array tasks); rank 0 only, and only when something changes."""
        if not self.env.is_main:
            return
        path = self.output_dir / TIMINGS_FILE
        with open(path.with_name(f".{TIMINGS_FILE}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            saved = self.saved_times()
            edited = edit(saved)
            if edited != saved or not path.is_file():
                atomic.write_json(path, edited)

    def phase_timer(self):
        """A callback that records the time since the previous call (or since now) under each phase
        name."""
        started = time.perf_counter()

        def timer(key: str) -> None:
            nonlocal started
            self.record_time(key, time.perf_counter() - started)
            started = time.perf_counter()

        return timer


def _zoo_dir(run: Run) -> Path:
    directory = run.dir("zoo")
    claim_stage_dir(directory, stage_inputs(run.cfg, Stage.collect), keep_on_change=True)
    return directory


def base_model(run: Run) -> tuple[torch.nn.Module, ParamSpec]:
    """The task network (initialised on the CPU, so its weights do not depend on the device), on the
    device."""
    model = build_task_net(run.cfg.task.net, run.data.input_shape, run.data.num_classes)
    model.to(run.device, memory_format=memory_format(run.device, run.data.x_train))
    return model, select_parameters(
        model, list(run.cfg.task.param.layers), statistics=run.cfg.task.param.statistics
    )


def _train_base(run: Run, seed: int, state_path: Path) -> tuple[torch.nn.Module, float]:
    """A base model trained from scratch: initialisation and data order from `seed` (resumable per
    epoch)."""
    torch.manual_seed(seed)
    model, _ = base_model(run)
    accuracy = train_base(
        model,
        run.data,
        run.cfg.task.base,
        Augmentation.from_config(run.cfg.data),
        seed,
        state_path,
        run.task_execution,
    )
    return model, accuracy


def run_base(run: Run) -> None:
    """Train the base model once: every layer-subset run continues from it (and whole-model run 0
    does)."""
    cfg, directory = run.cfg, _zoo_dir(run)
    if (directory / BASE_WEIGHTS).is_file():
        return
    started = time.perf_counter()
    model, base_acc = _train_base(
        run, derive_seed(cfg.seed, Purpose.base), directory / "base_state.pt"
    )
    save_base_weights(directory, model.state_dict())
    run.tracker.log({"collect/base_val_acc": base_acc})
    run.record_time("collect_base", time.perf_counter() - started)
    log.info(
        "collect: base model trained to %.2f%% validation accuracy in %.1f s",
        base_acc,
        time.perf_counter() - started,
    )


def run_collection(run: Run, index: int) -> None:
    """Collection run `index` of task.collect.runs: its own data order; for whole models run r > 0
    also trains its own base model from scratch (its own initialisation), while a layer subset keeps
    the shared base."""
    cfg, directory = run.cfg, _zoo_dir(run)
    runs = cfg.task.collect.runs
    path = run_path(directory, index, runs)
    if path.is_file():
        return
    started = time.perf_counter()
    if has_family(cfg):
        _collect_task_run(run, index, path, started)
        return
    model, spec = base_model(run)
    init_seed, base_acc, base_digest = derive_seed(cfg.seed, Purpose.base), None, None
    if is_whole_model(model, spec) and index > 0:  # its own base model, from scratch
        init_seed = derive_seed(cfg.seed, Purpose.base, index)
        model, base_acc = _train_base(run, init_seed, path.with_suffix(".base_state.pt"))
        log.info("collect: run %d/%d: own base model at %.2f%%", index + 1, runs, base_acc)
    else:
        model.load_state_dict(load_base_weights(directory))
        base_digest = atomic.sha256(directory / BASE_WEIGHTS)
    collect_seed = derive_seed(cfg.seed, Purpose.collect_run, index)
    vectors, accuracy = collect_checkpoints(
        model,
        spec,
        run.data,
        cfg.task.collect,
        run_sizes(cfg.task.param.k, runs)[index],
        Augmentation.from_config(cfg.data),
        collect_seed,
        path.with_suffix(".state.pt"),
        run.task_execution,
    )
    interval = checkpoint_interval(cfg.task.collect, len(run.data.x_train))
    seconds = time.perf_counter() - started
    run.record_time(run_key(index), seconds)
    record = {
        "init_seed": init_seed,
        "collect_seed": collect_seed,
        "base_val_acc": base_acc,
        "steps": [interval * (i + 1) for i in range(len(vectors))],
        "config_sha256": atomic.json_digest(stage_inputs(cfg, Stage.collect)),
        "base_sha256": base_digest,
    }
    atomic.write_safetensors(
        path,
        {"params": vectors, "val_accuracy": accuracy},
        metadata={"spec": json.dumps(spec.to_json()), "run": json.dumps(record)},
    )
    log.info("collect: run %d/%d: %d checkpoints in %.1f s", index + 1, runs, len(vectors), seconds)


def _collect_task_run(run: Run, index: int, path: Path, started: float) -> None:
    """Collection run `index` of a zoo of many tasks: its share of the (training task, seed) pairs."""
    cfg, directory = run.cfg, _zoo_dir(run)
    family, split = task_family(cfg, run.data.num_classes)
    pairs = run_pairs(split.train, cfg.task.family.seeds, index, cfg.task.collect.runs)
    base_state = load_base_weights(directory)
    tensors = collect_tasks(
        pairs,
        family,
        run.data,
        cfg.task.net,
        base_state,
        TaskRecipe.from_config(cfg.task),
        cfg.seed,
        path.with_suffix(".state.safetensors"),
    )
    _, spec = task_network(cfg.task.net, run.data.input_shape, base_state, cfg.seed, 0)
    seconds = time.perf_counter() - started
    run.record_time(run_key(index), seconds)
    epochs = cfg.task.family.epochs
    record = {
        "pairs": [list(pair) for pair in pairs],
        "init_seed": None,
        "collect_seed": None,
        "base_val_acc": None,
        "steps": [epochs + c + 1 for _ in pairs for c in range(cfg.task.family.checkpoints)],
        "config_sha256": atomic.json_digest(stage_inputs(cfg, Stage.collect)),
        "base_sha256": atomic.sha256(directory / BASE_WEIGHTS),
    }
    atomic.write_safetensors(
        path, tensors, metadata={"spec": json.dumps(spec.to_json()), "run": json.dumps(record)}
    )
    log.info(
        "collect: run %d/%d: %d tasks, %d checkpoints in %.1f s",
        index + 1,
        cfg.task.collect.runs,
        len(pairs),
        len(tensors["task"]),
        seconds,
    )


def run_merge(run: Run) -> None:
    """Join the collection runs, in run order (each aligned onto run 0 with task.collect.align),
    into the zoo."""
    cfg, directory = run.cfg, _zoo_dir(run)
    if ParamZoo.exists(directory):
        return
    runs = cfg.task.collect.runs
    paths = [run_path(directory, index, runs) for index in range(runs)]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise ZooError(f"cannot merge the zoo in {directory}: runs {missing} are not collected yet")
    spec = ParamSpec.from_json(json.loads(atomic.read_safetensors_metadata(paths[0])["spec"]))
    records = [json.loads(atomic.read_safetensors_metadata(path)["run"]) for path in paths]
    check_runs_belong(cfg, directory, paths, records)
    meta = {
        "task": cfg.task.name,
        "seed": cfg.seed,
        "runs": runs,
        "run_sizes": run_sizes(cfg.task.param.k, runs),
        "checkpoint_run": [index for index, record in enumerate(records) for _ in record["steps"]],
        "checkpoint_step": [step for record in records for step in record["steps"]],
        "run_records": records,
        "aligned": bool(cfg.task.collect.align),
        "config": to_container(cfg),
        RECORD_KEY: stage_inputs(cfg, Stage.collect),
    }
    if has_family(cfg):
        family, split = task_family(cfg, run.data.num_classes)
        meta["family"] = {
            "name": FamilyName(cfg.task.family.name).value,
            "train": split.train,
            "held_out": split.held_out,
            "split_check": family.split_check(split),
        }
    if cfg.task.collect.align:
        model, _ = base_model(run)
        paths, meta["alignment"] = align_runs(
            model.cpu(), spec, paths, directory / "runs" / "aligned"
        )
    zoo = ParamZoo.merge(directory, paths, spec, meta)
    log.info(
        "collect: %d checkpoints of %d parameters from %d runs, validation accuracy %.2f-%.2f%%",
        zoo.k,
        spec.dim,
        runs,
        float(zoo.val_accuracy.min()),
        float(zoo.val_accuracy.max()),
    )


def check_runs_belong(
    cfg: DictConfig, directory: Path, paths: list[Path], records: list[dict]
) -> None:
    """ZooError naming each collection run that was made with another config (another seed, lr, data
    file, ...) or from another base model than this zoo's: such runs are never merged."""
    config = atomic.json_digest(stage_inputs(cfg, Stage.collect))
    base = atomic.sha256(directory / BASE_WEIGHTS) if (directory / BASE_WEIGHTS).is_file() else None
    foreign = [
        f"{path.name} (another config)"
        for path, record in zip(paths, records)
        if record.get("config_sha256") != config
    ]
    foreign += [
        f"{path.name} (another base model)"
        for path, record in zip(paths, records)
        if record.get("config_sha256") == config and record.get("base_sha256") not in (None, base)
    ]
    if foreign:
        raise ZooError(
            f"cannot merge the zoo in {directory}: {', '.join(foreign)} was not collected by this "
            "collection; delete those run files to collect them again, or use a new paths.output_dir"
        )


def run_collect(run: Run) -> None:
    """The whole collection in this process: base model, every collection run in turn, merge."""
    if ParamZoo.exists(_zoo_dir(run)):
        log.info("collect: zoo in %s is complete, skipping", run.output_dir / "zoo")
        return
    started = time.perf_counter()
    run_base(run)
    for index in range(run.cfg.task.collect.runs):
        run_collection(run, index)
    run_merge(run)
    run.record_time("collect", time.perf_counter() - started)


def run_train(run: Run) -> None:
    """Train the generator design on every rank of the launch; rank 0 writes it."""
    cfg, directory = run.cfg, run.dir("generator")
    claim_stage_dir(directory, stage_inputs(cfg, Stage.train), keep_on_change=True)
    if generator_exists(directory):
        log.info("train: generator in %s is complete, skipping", directory)
        return
    zoo = ParamZoo.load(run.output_dir / "zoo").best_by_validation(cfg.generator.train_fraction)
    generator = design_class(cfg).train(
        zoo, cfg, directory, run.tracker, run.phase_timer(), run.device
    )
    hosts = distributed.rank_hosts()
    if run.env.is_main:
        generator.save(
            directory,
            {
                "config": to_container(cfg),
                "dim": zoo.spec.dim,
                "k": zoo.k,
                "ranks": run.env.world_size,
                "hosts": hosts,
                RECORD_KEY: stage_inputs(cfg, Stage.train),
            },
        )
    distributed.barrier()


def generated_damage(directory: Path, inputs: dict) -> str | None:
    """Why complete generated models in `directory`, made with `inputs`, cannot be used:
    generated.json not as pdiff wrote it, recording other inputs, or params.safetensors not the file
    it describes (replaced, truncated); None when they can."""
    try:
        record = atomic.read_checked_json(directory / GENERATED_META)
    except ZooError:
        return f"holds a {GENERATED_META} that pdiff did not write (edited, damaged, or from an older pdiff)"
    recorded = inputs_diff(record.get(RECORD_KEY) or {}, inputs)
    if recorded:
        return f"holds a {GENERATED_META} of models made with another config ({', '.join(recorded[:6])})"
    params = directory / GENERATED_PARAMS
    if not params.is_file() or atomic.sha256(params) != record.get(PARAMS_DIGEST):
        return f"holds a {GENERATED_PARAMS} that is not the one {GENERATED_META} describes (replaced or damaged)"
    return None


def generated_problem(directory: Path, inputs: dict) -> str | None:
    """Why `directory` does not hold the models `inputs` make: none complete, another config, or
    damage; None when it does."""
    if not (directory / GENERATED_META).is_file():
        return "holds no complete generation"
    changed = changed_inputs(directory, inputs)
    if changed:
        return f"was made with another config ({', '.join(changed[:6])})"
    return generated_damage(directory, inputs)


def evaluation_outputs(output_dir: Path) -> tuple[Path, ...]:
    """What the evaluate stage writes beside eval/: the report and its plots."""
    return (*(output_dir / name for name in REPORT_FILES), *sorted(output_dir.glob("*.png")))


def run_generate(run: Run) -> None:
    """Sample generate.n models; the folder's old models (made with another config, or damaged) are
    moved aside only once the new ones exist, so a generation that fails leaves them where they
    were. The evaluation of the old models (eval/, the report and its plots) goes aside with them.
    """
    cfg, directory = run.cfg, run.dir("generated")
    inputs = stage_inputs(cfg, Stage.generate)
    problem = generated_problem(directory, inputs)
    if problem is None:
        log.info("generate: %s is complete, skipping", directory)
        return
    zoo = ParamZoo.load(run.output_dir / "zoo")
    log.info(
        "generate: sampling %d models of %d parameters (%.2f GiB)",
        cfg.generate.n,
        zoo.spec.dim,
        cfg.generate.n * zoo.spec.dim * 4 / 2**30,
    )
    started = time.perf_counter()
    verify_generator(run.output_dir / "generator")
    generator = design_class(cfg).load(run.output_dir / "generator", zoo.spec, cfg, run.device)
    extra: dict[str, torch.Tensor] = {}
    if zoo.tasks is not None:
        params, extra = sample_for_tasks(generator, zoo, cfg)
        conditioning = None
    else:
        conditioning = Conditioning.from_config(cfg.generate, zoo.val_accuracy)
        warn_outside_zoo(conditioning, zoo.val_accuracy)
        params = generator.sample(cfg.generate.n, cfg.sampler, cfg.seed, conditioning)
    broken = int((~torch.isfinite(params).all(1)).sum())
    if broken:
        raise GeneratorError(
            f"{broken} of {len(params)} generated models hold non-finite values (the generator in "
            f"{run.output_dir / 'generator'} or sampler={SamplerName(cfg.sampler.name).value} "
            "diverged); nothing was written. Check the sampler settings, or retrain the generator "
            "with a lower learning rate"
        )
    supersede(directory, problem)
    claim_stage_dir(directory, inputs, keep_on_change=False)
    supersede(
        run.output_dir / "eval",
        "evaluated other generated models",
        evaluation_outputs(run.output_dir),
    )
    run.forget_times(EVALUATE_TIMINGS)  # they measured the evaluation of other models
    atomic.write_safetensors(directory / GENERATED_PARAMS, {"params": params, **extra})
    atomic.write_checked_json(
        directory / GENERATED_META,
        {
            "n": cfg.generate.n,
            "dim": zoo.spec.dim,
            "tasks": sorted(set(extra["task"].tolist())) if extra else None,
            "sampler": SamplerName(cfg.sampler.name).value,
            "target_acc": conditioning.target_acc if conditioning else None,
            "guidance": conditioning.guidance if conditioning else None,
            PARAMS_DIGEST: atomic.sha256(directory / GENERATED_PARAMS),
            RECORD_KEY: inputs,
        },
    )
    run.record_time("generate", time.perf_counter() - started)


def sample_for_tasks(
    generator, zoo: ParamZoo, cfg: DictConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A zoo of many tasks: generate.n models for the task generate.task names, or for every
    held-out task and as many for random codes (the control), all in one batch. Returns the task
    models [T*n, D] and {task: [T*n] codes, control_params, control_task} (no controls for
    generate.task)."""
    family = SubsetFamily(int(zoo.tasks.descriptor.shape[1]))
    n = cfg.generate.n
    if cfg.generate.task is not None:
        codes = torch.tensor([family.code_of(list(cfg.generate.task))]).repeat_interleave(n)
        controls = torch.zeros(0, dtype=torch.int64)
    else:
        codes = torch.tensor(zoo.meta["family"]["held_out"]).repeat_interleave(n)
        draws = torch.randint(
            0,
            len(family.codes),
            (len(codes),),
            generator=generator_for(cfg.seed, Purpose.task_control),
        )
        controls = torch.tensor(family.codes)[draws]
    both = torch.cat([codes, controls])
    params = generator.sample(
        len(both),
        cfg.sampler,
        cfg.seed,
        Conditioning(None, float(cfg.generate.guidance), family.descriptor(both)),
    )
    log.info(
        "generate: %d models for %d tasks, %d for random descriptors",
        len(codes),
        len(set(codes.tolist())),
        len(controls),
    )
    return params[: len(codes)], {
        "task": codes,
        "control_params": params[len(codes) :],
        "control_task": controls,
    }


def warn_outside_zoo(conditioning: Conditioning | None, val_accuracy: torch.Tensor) -> bool:
    """Warn (and say so) when generation aims at an accuracy outside the zoo's validation
    accuracies: the generator never saw a checkpoint there, so what it makes is an extrapolation."""
    low, high = float(val_accuracy.min()), float(val_accuracy.max())
    if conditioning is None or low <= conditioning.target_acc <= high:
        return False
    log.warning(
        "generate.target_acc=%.2f lies outside the zoo's validation accuracies (%.2f-%.2f%%): the generator "
        "never saw a checkpoint there; aim inside that range (or use generate.target_quantile)",
        conditioning.target_acc,
        low,
        high,
    )
    return True
