"""The stages, what each reads and writes, and skip-if-done.

DIR/zoo        collect:  base_model.safetensors, zoo.safetensors + zoo.json (resume: *_state.pt)
DIR/generator  train:    autoencoder.safetensors, denoiser_ema.safetensors, generator.json
DIR/generated  generate: params.safetensors + generated.json
DIR/eval       evaluate: predictions.safetensors, memorization.json; then DIR/report.json, report.md, plots
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from pdiff import atomic, distributed
from pdiff.collect import collect_checkpoints, train_base
from pdiff.config import AEName, ConfigError, Stage, TrainerName, to_container, validate
from pdiff.data import Dataset, check_data_available, load_dataset
from pdiff.evaluate import ParameterEvaluator
from pdiff.generate import generate_parameters
from pdiff.generator import (
    encode_latents,
    generator_exists,
    load_generator,
    save_generator,
    train_autoencoder,
    train_denoiser,
)
from pdiff.memorization import (
    Population,
    baseline_populations,
    matched_noise_scale,
    memorization_normalizer,
    memorization_table,
    nearest_original,
    verdict,
)
from pdiff.params import ParamNormalizer, ParamSpec, select_parameters
from pdiff.report import build_report, write_report
from pdiff.tasknets import build_task_net
from pdiff.token_generator import load_token_generator, save_token_generator, train_token_generator
from pdiff.tracking import Tracker
from pdiff.zoo import BASE_WEIGHTS, ParamZoo, ZooError, load_base_weights, save_base_weights

log = logging.getLogger(__name__)
STAGE_ORDER = (Stage.collect, Stage.train, Stage.generate, Stage.evaluate)
INPUTS_FILE = "inputs.json"
EVAL_PREDICTIONS = "predictions.safetensors"
EVAL_MEMORIZATION = "memorization.json"
TIMINGS_FILE = "timings.json"


@dataclass
class Run:
    """One pipeline run: its config, output folder, tracker and per-stage timings."""

    cfg: DictConfig
    output_dir: Path
    tracker: Tracker
    env: distributed.DistEnv = field(default_factory=distributed.DistEnv)
    timings: dict[str, float] = field(default_factory=dict)
    _data: Dataset | None = None

    @property
    def data(self) -> Dataset:
        if self._data is None:
            self._data = load_dataset(self.cfg.data)
        return self._data

    def dir(self, name: str) -> Path:
        path = self.output_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record_time(self, key: str, seconds: float) -> None:
        self.timings[key] = seconds
        if not self.env.is_main:
            return
        path = self.output_dir / TIMINGS_FILE
        saved = json.loads(path.read_text()) if path.is_file() else {}
        atomic.write_json(path, {**saved, key: round(seconds, 3)})


def _flat(tree, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def stage_inputs(cfg: DictConfig, stage: Stage) -> dict:
    """The config that a stage's outputs depend on (each stage includes its predecessors')."""
    full = to_container(cfg)
    inputs = {"task": full["task"], "data": full["data"], "seed": full["seed"], "collect": full["collect"]}
    if stage in (Stage.train, Stage.generate, Stage.evaluate):
        sampling = ("sampler", "ddim_steps", "ddim_eta")
        inputs["ae"] = full["ae"]
        inputs["diffusion"] = {k: v for k, v in full["diffusion"].items() if k not in sampling}
    if stage in (Stage.generate, Stage.evaluate):
        inputs["generate"] = full["generate"]
        inputs["sampling"] = {k: full["diffusion"][k] for k in sampling}
    return inputs


def changed_inputs(directory: Path, inputs: dict) -> list[str]:
    """'key: old -> new' for each config key that differs from what `directory` was made with."""
    path = directory / INPUTS_FILE
    if not path.is_file():
        return []
    old, new = _flat(json.loads(path.read_text())), _flat(inputs)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]


def refuse_changed(directory: Path, inputs: dict) -> None:
    """ConfigError if a folder of costly work was made with another config; it is never overwritten."""
    changed = changed_inputs(directory, inputs)
    if changed:
        raise ConfigError(f"{directory} was made with another config ({', '.join(changed[:6])}); it is kept as it "
                          "is. Use a new paths.output_dir, or the config that made it")


def claim_stage_dir(directory: Path, inputs: dict, keep_on_change: bool) -> None:
    """Record what a stage folder is made from; empty it if it was made from other inputs.

    A folder holding costly work (keep_on_change) made from other inputs is never emptied: ConfigError.
    """
    if keep_on_change:
        refuse_changed(directory, inputs)
    elif changed_inputs(directory, inputs):
        for stale in directory.iterdir():
            stale.unlink()
    if not (directory / INPUTS_FILE).is_file() or changed_inputs(directory, inputs):
        atomic.write_json(directory / INPUTS_FILE, inputs)


def shard_sizes(k: int, shards: int) -> list[int]:
    """How many of the K checkpoints each collection shard takes (the first K mod S take one more)."""
    return [k // shards + (shard < k % shards) for shard in range(shards)]


def shard_path(directory: Path, shard: int, shards: int) -> Path:
    return directory / "shards" / f"shard-{shard:04d}-of-{shards:04d}.safetensors"


def _zoo_dir(run: Run) -> Path:
    directory = run.dir("zoo")
    claim_stage_dir(directory, stage_inputs(run.cfg, Stage.collect), keep_on_change=True)
    return directory


def _base_model(run: Run):
    model = build_task_net(run.cfg.task.net, run.data.input_shape, run.data.num_classes)
    return model, select_parameters(model, list(run.cfg.task.param.layers))


def run_base(run: Run) -> None:
    """Train the base model once (resumable per epoch); every shard continues from it."""
    cfg, directory = run.cfg, _zoo_dir(run)
    if (directory / BASE_WEIGHTS).is_file():
        return
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model, _ = _base_model(run)
    base_acc = train_base(model, run.data, cfg.task.base, cfg.data.augment, cfg.seed, directory / "base_state.pt")
    save_base_weights(directory, model.state_dict())
    run.tracker.log({"collect/base_acc": base_acc})
    run.record_time("collect_base", time.perf_counter() - started)
    log.info("collect: base model trained to %.2f%% test accuracy in %.1f s", base_acc, time.perf_counter() - started)


def run_collect_shard(run: Run, shard: int) -> None:
    """Collect shard `shard` of collect.shards: its own seed and data order, from the shared base model."""
    cfg, directory = run.cfg, _zoo_dir(run)
    shards = cfg.collect.shards
    path = shard_path(directory, shard, shards)
    if path.is_file():
        return
    started = time.perf_counter()
    model, spec = _base_model(run)
    model.load_state_dict(load_base_weights(directory))
    vectors, accuracy = collect_checkpoints(
        model, spec, run.data, cfg.task.collect, shard_sizes(cfg.task.param.k, shards)[shard], cfg.data.augment,
        cfg.seed + 10_007 * (shard + 1), path.with_suffix(".state.pt"))
    seconds = time.perf_counter() - started
    atomic.write_safetensors(path, {"params": vectors, "accuracy": accuracy},
                             metadata={"seconds": f"{seconds:.3f}", "spec": json.dumps(spec.to_json())})
    log.info("collect: shard %d/%d: %d checkpoints in %.1f s", shard + 1, shards, len(vectors), seconds)


def run_merge(run: Run) -> None:
    """Join the shards, in shard order, into the one zoo that training reads."""
    cfg, directory = run.cfg, _zoo_dir(run)
    if ParamZoo.exists(directory):
        return
    paths = [shard_path(directory, shard, cfg.collect.shards) for shard in range(cfg.collect.shards)]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise ZooError(f"cannot merge the zoo in {directory}: shards {missing} are not collected yet")
    spec = ParamSpec.from_json(json.loads(atomic.read_safetensors_metadata(paths[0])["spec"]))
    zoo = ParamZoo.merge(directory, paths, spec,
                         {"task": cfg.task.name, "seed": cfg.seed, "shards": cfg.collect.shards,
                          "shard_sizes": shard_sizes(cfg.task.param.k, cfg.collect.shards),
                          "config": to_container(cfg)})
    accuracy = zoo.accuracy
    log.info("collect: %d checkpoints of %d parameters, accuracy %.2f-%.2f%%", zoo.k, spec.dim,
             float(accuracy.min()), float(accuracy.max()))


def run_collect(run: Run) -> None:
    """The whole collection in this process: base model, every shard in turn, merge."""
    if ParamZoo.exists(_zoo_dir(run)):
        log.info("collect: zoo in %s is complete, skipping", run.output_dir / "zoo")
        return
    started = time.perf_counter()
    run_base(run)
    for shard in range(run.cfg.collect.shards):
        run_collect_shard(run, shard)
    run_merge(run)
    run.record_time("collect", time.perf_counter() - started)


def run_train(run: Run) -> None:
    """Autoencoder, then latent denoiser, on every rank of the launch; rank 0 writes the generator."""
    cfg, directory = run.cfg, run.dir("generator")
    claim_stage_dir(directory, stage_inputs(cfg, Stage.train), keep_on_change=True)
    if generator_exists(directory):
        log.info("train: generator in %s is complete, skipping", directory)
        return
    if AEName(cfg.ae.name) is AEName.token:
        _train_tokens(run, directory)
        return
    zoo = ParamZoo.load(run.output_dir / "zoo")
    started = time.perf_counter()
    normalizer, autoencoder = train_autoencoder(zoo, cfg.ae, cfg.trainer, cfg.seed, directory, run.tracker)
    run.record_time("train_autoencoder", time.perf_counter() - started)
    started = time.perf_counter()
    latents, scale = encode_latents(normalizer, autoencoder, zoo.vectors)
    denoiser, ema_denoiser = train_denoiser(latents, cfg.diffusion, cfg.trainer, cfg.seed, directory, run.tracker)
    if run.env.is_main:
        save_generator(directory, normalizer, autoencoder, denoiser, ema_denoiser, scale,
                       {"config": to_container(cfg), "dim": zoo.spec.dim, "k": zoo.k,
                        "ranks": run.env.world_size})
    distributed.barrier()
    run.record_time("train_diffusion", time.perf_counter() - started)


def _train_tokens(run: Run, directory: Path) -> None:
    """The large-D design: the zoo stays a memory map; each rank reads only its rows of each batch."""
    cfg = run.cfg
    zoo = ParamZoo.load(run.output_dir / "zoo", mapped=True)
    started = time.perf_counter()

    def timer(key: str) -> None:
        nonlocal started
        run.record_time(key, time.perf_counter() - started)
        started = time.perf_counter()
    weights, meta = train_token_generator(zoo.vectors, zoo.spec, cfg.ae, cfg.diffusion, cfg.trainer, cfg.seed,
                                          directory, run.tracker, timer)
    if run.env.is_main:
        save_token_generator(directory, weights, dict(meta, config=to_container(cfg), dim=zoo.spec.dim, k=zoo.k,
                                                      ranks=run.env.world_size))
    distributed.barrier()


def run_generate(run: Run) -> None:
    cfg, directory = run.cfg, run.dir("generated")
    claim_stage_dir(directory, stage_inputs(cfg, Stage.generate), keep_on_change=False)
    if (directory / "generated.json").is_file():
        log.info("generate: %s is complete, skipping", directory)
        return
    zoo = ParamZoo.load(run.output_dir / "zoo")
    started = time.perf_counter()
    if AEName(cfg.ae.name) is AEName.token:
        generator = load_token_generator(run.output_dir / "generator", zoo.spec, cfg.ae, cfg.diffusion)
        params = generator.sample(cfg.generate.n, cfg.diffusion, cfg.seed + 20_011)
    else:
        generator = load_generator(run.output_dir / "generator", cfg.ae, cfg.diffusion, zoo.spec.dim)
        params = generate_parameters(generator, cfg.generate.n, cfg.diffusion, cfg.seed + 20_011)
    atomic.write_safetensors(directory / "params.safetensors", {"params": params})
    atomic.write_json(directory / "generated.json", {"n": cfg.generate.n, "dim": zoo.spec.dim,
                                                     "sampler": str(cfg.diffusion.sampler)})
    run.record_time("generate", time.perf_counter() - started)


def _predict_populations(run: Run, zoo: ParamZoo, generated_vectors: torch.Tensor, normalizer: ParamNormalizer
                         ) -> tuple[dict[str, torch.Tensor], dict]:
    """Test predictions of originals, generated models and the baselines, and the memorisation table."""
    cfg, data = run.cfg, run.data
    model = build_task_net(cfg.task.net, data.input_shape, data.num_classes)
    model.load_state_dict(load_base_weights(run.output_dir / "zoo"))
    evaluator = ParameterEvaluator(model, zoo.spec, data.x_test, data.y_test, cfg.evaluate.chunk_size,
                                   cfg.evaluate.batched, cfg.data.eval_batch_size)
    originals = Population("originals", zoo.vectors, evaluator.predictions(zoo.vectors))
    generated = Population("generated", generated_vectors, evaluator.predictions(generated_vectors))
    generated_l2 = nearest_original(normalizer.normalize(generated.vectors), normalizer.normalize(zoo.vectors))[0]
    baselines = baseline_populations(zoo.vectors, normalizer, matched_noise_scale(float(generated_l2.mean()),
                                                                                  zoo.spec.dim),
                                     n=len(generated_vectors), seed=cfg.seed + 30_011)
    for baseline in baselines:
        baseline.predictions = evaluator.predictions(baseline.vectors)
    table, per_model = memorization_table(originals, generated, baselines, normalizer, data.y_test)
    predictions = {p.name: p.predictions.to(torch.int16) for p in (originals, generated, *baselines)}
    return {**predictions, **per_model, "y_test": data.y_test}, table


def run_evaluate(run: Run) -> dict:
    cfg, directory = run.cfg, run.dir("eval")
    claim_stage_dir(directory, stage_inputs(cfg, Stage.evaluate), keep_on_change=False)
    zoo = ParamZoo.load(run.output_dir / "zoo")
    results, table_path = directory / EVAL_PREDICTIONS, directory / EVAL_MEMORIZATION
    generated = atomic.read_safetensors(run.output_dir / "generated" / "params.safetensors")["params"]
    normalizer = memorization_normalizer(zoo.spec, zoo.vectors)
    if results.is_file() and table_path.is_file():
        predictions, table = atomic.read_safetensors(results), json.loads(table_path.read_text())
    else:
        started = time.perf_counter()
        predictions, table = _predict_populations(run, zoo, generated, normalizer)
        atomic.write_safetensors(results, predictions)
        atomic.write_json(table_path, table)
        run.record_time("evaluate", time.perf_counter() - started)
    y_test = predictions.pop("y_test")
    per_model = {name: predictions.pop(name) for name in list(predictions) if ":" in name}
    accuracies = {name: (p == y_test).double().mean(1) * 100 for name, p in predictions.items()}
    saved = json.loads((run.output_dir / TIMINGS_FILE).read_text())
    report = build_report(cfg.task.name, zoo.k, zoo.spec.dim, accuracies["originals"], accuracies["generated"], saved)
    report["memorization"] = table
    write_report(run.output_dir, report, accuracies, per_model, len(y_test),
                 {"originals": normalizer.normalize(zoo.vectors), "generated": normalizer.normalize(generated)},
                 verdict(table))
    run.tracker.log({f"eval/{group}_{stat}": value for group in ("original", "generated")
                     for stat, value in report[group].items()})
    run.tracker.log_artifacts({f"eval/{name}_acc": acc.tolist() for name, acc in accuracies.items()},
                              {"eval/report": [["models", "n", "best", "mean", "median", "min", "std"]]
                               + [[g, *report[g].values()] for g in ("original", "generated")],
                               "eval/memorization": [["models", *table["generated"]]]
                               + [[name, *row.values()] for name, row in table.items() if isinstance(row, dict)]},
                              images=sorted(run.output_dir.glob("*.png")))
    return report


STAGE_RUNNERS = {Stage.collect: run_collect, Stage.train: run_train, Stage.generate: run_generate,
                 Stage.evaluate: run_evaluate}


def preflight(cfg: DictConfig, stages: list[Stage]) -> None:
    """Every config check that can fail, before any work starts."""
    validate(cfg)
    if Stage.collect in stages or Stage.evaluate in stages:
        check_data_available(cfg.data)
    if Stage.collect in stages:
        data = load_dataset(cfg.data)
        select_parameters(build_task_net(cfg.task.net, data.input_shape, data.num_classes),
                          list(cfg.task.param.layers))


def open_run(cfg: DictConfig, env: distributed.DistEnv | None = None) -> Run:
    """The output folder with the resolved config in it, and a tracker (rank 0's; a silent one elsewhere)."""
    env = env or distributed.DistEnv()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    output_dir = Path(cfg.paths.output_dir).expanduser().resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if env.is_main:
        atomic.write_text(output_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(to_container(cfg))))
    return Run(cfg, output_dir, Tracker(output_dir, cfg.logger, to_container(cfg), enabled=env.is_main), env)


@contextmanager
def opened_run(cfg: DictConfig) -> Iterator[Run]:
    """open_run inside this launch's process group (started when there are several ranks or DeepSpeed)."""
    env, trainer = distributed.detect(), TrainerName(cfg.trainer.name)
    if env.distributed and trainer is not TrainerName.deepspeed:
        raise ConfigError(f"this launch has {env.world_size} ranks ({env.launcher}) but trainer={trainer.value}; "
                          "use trainer=deepspeed, or launch one process")
    if env.distributed or trainer is TrainerName.deepspeed:
        distributed.start(env)
    run, clean = open_run(cfg, env), False
    try:
        yield run
        clean = True
    finally:
        run.tracker.close()
        distributed.shutdown(clean)


def on_main_rank(run: Run, stage: Callable[[Run], object]) -> object:
    """Run a single-process stage on rank 0 while the other ranks wait for it."""
    result = stage(run) if run.env.is_main else None
    distributed.barrier()
    return result


def run_pipeline(cfg: DictConfig) -> dict | None:
    """Run `cfg.stage` (or all stages) into `cfg.paths.output_dir`; return the report when evaluation ran."""
    stage = Stage(cfg.stage)
    stages = list(STAGE_ORDER) if stage is Stage.all else [stage]
    preflight(cfg, stages)
    report, started = None, time.perf_counter()
    with opened_run(cfg) as run:
        for current in stages:
            runner = STAGE_RUNNERS[current]
            result = runner(run) if current is Stage.train else on_main_rank(run, runner)
            report = result if current is Stage.evaluate else report
        if report is not None:
            run.tracker.summary({f"{g}/{s}": v for g in ("original", "generated") for s, v in report[g].items()})
    if run.env.is_main:
        print(summary_line(cfg, run.output_dir, report, time.perf_counter() - started))
    return report


JOBS = ("base", "shard", "train", "report")


def run_job(cfg: DictConfig, job: str, shard: int | None = None) -> str:
    """One unit of the pipeline as one cluster job runs it (the train job on all its tasks); returns the folder."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; one of {JOBS}")
    with opened_run(cfg) as run:
        if job == "base":
            on_main_rank(run, run_base)
        elif job == "shard":
            on_main_rank(run, lambda r: run_collect_shard(r, shard))
        elif job == "train":
            on_main_rank(run, run_merge)
            run_train(run)
        else:
            on_main_rank(run, run_generate)
            on_main_rank(run, run_evaluate)
    return str(run.output_dir)


def pending_jobs(cfg: DictConfig) -> list[tuple[str, int | None]]:
    """The jobs still needed to finish this output folder, in chain order: (job, shard)."""
    out = Path(cfg.paths.output_dir).expanduser().resolve()
    zoo_dir, generator_dir = out / "zoo", out / "generator"
    refuse_changed(zoo_dir, stage_inputs(cfg, Stage.collect))
    refuse_changed(generator_dir, stage_inputs(cfg, Stage.train))
    jobs: list[tuple[str, int | None]] = []
    if not ParamZoo.exists(zoo_dir):
        if not (zoo_dir / BASE_WEIGHTS).is_file():
            jobs.append(("base", None))
        shards = cfg.collect.shards
        jobs += [("shard", s) for s in range(shards) if not shard_path(zoo_dir, s, shards).is_file()]
    if jobs or not generator_exists(generator_dir):
        jobs.append(("train", None))
    report_current = ((out / "report.json").is_file() and (out / "eval" / EVAL_MEMORIZATION).is_file()
                      and not changed_inputs(out / "eval", stage_inputs(cfg, Stage.evaluate)))
    if jobs or not report_current:
        jobs.append(("report", None))
    return jobs


def summary_line(cfg: DictConfig, output_dir: Path, report: dict | None, seconds: float) -> str:
    if report is None:
        return f"pdiff: stage={Stage(cfg.stage).value} done in {seconds:.1f} s -> {output_dir}"
    o, g = report["original"], report["generated"]
    return (f"pdiff: {report['task']} K={report['k']} D={report['param_count']} | original best/mean/min "
            f"{o['best']:.2f}/{o['mean']:.2f}/{o['min']:.2f} | generated best/mean/min {g['best']:.2f}/{g['mean']:.2f}/"
            f"{g['min']:.2f} (n={g['n']}) | {seconds:.1f} s | {output_dir / 'report.md'}")
