"""The generate stage: the job's sampling (Run.stages.sample) into DIR/generated, params.safetensors
+ generated.json; new generated models move the old evaluation and report to superseded/.

generated.json, written last, records the stage's inputs (RECORD_KEY) and the digest of the models
it describes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from pdiff import atomic
from pdiff.config import SamplerName, Stage
from pdiff.errors import GeneratorError, ZooError
from pdiff.evaluation.costs import RECALIBRATION_KEY
from pdiff.generators import design_class
from pdiff.generators.interface import verify_generator
from pdiff.pipeline.run_context import Run
from pdiff.pipeline.stage_dirs import (
    RECORD_KEY,
    changed_inputs,
    claim_stage_dir,
    inputs_diff,
    stage_inputs,
    supersede,
)
from pdiff.zoo.store import ParamZoo

log = logging.getLogger(__name__)
GENERATED_PARAMS = "params.safetensors"
GENERATED_META = "generated.json"
EVALUATE_TIMINGS = ("evaluate", RECALIBRATION_KEY)  # timings.json keys the evaluate stage measures
PARAMS_DIGEST = "params_sha256"  # generated.json: the digest of the models it describes
REPORT_FILES = (
    "report.json",
    "report.md",
)  # with DIR/*.png, what the evaluate stage writes beside eval/


def generated_damage(directory: Path, inputs: dict) -> str | None:
    """Why complete generated models in `directory`, made with `inputs`, cannot be used:
    generated.json not as pdiff wrote it, recording other inputs, or params.safetensors not the file
    it describes (replaced, truncated); None when they can."""
    try:
        record = atomic.read_checked_json(directory / GENERATED_META)
    except ZooError:
        return (
            f"holds a {GENERATED_META} that pdiff did not write (edited, damaged, or from an "
            "older pdiff)"
        )
    recorded = inputs_diff(record.get(RECORD_KEY) or {}, inputs)
    if recorded:
        return (
            f"holds a {GENERATED_META} of models made with another config "
            f"({', '.join(recorded[:6])})"
        )
    params = directory / GENERATED_PARAMS
    if not params.is_file() or atomic.sha256(params) != record.get(PARAMS_DIGEST):
        return (
            f"holds a {GENERATED_PARAMS} that is not the one {GENERATED_META} describes "
            "(replaced or damaged)"
        )
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
    """Sample the job's models; the folder's old models (made with another config, or damaged) are
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
    samples = run.stages.sample(run, generator, zoo)
    params = samples.params
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
    atomic.write_safetensors(directory / GENERATED_PARAMS, {"params": params, **samples.extra})
    atomic.write_checked_json(
        directory / GENERATED_META,
        {
            "n": cfg.generate.n,
            "dim": zoo.spec.dim,
            "tasks": samples.tasks,
            "sampler": SamplerName(cfg.sampler.name).value,
            "target_acc": samples.target_acc,
            "guidance": samples.guidance,
            PARAMS_DIGEST: atomic.sha256(directory / GENERATED_PARAMS),
            RECORD_KEY: inputs,
        },
    )
    run.record_time("generate", time.perf_counter() - started)
