"""The evaluate stage: the generated models checked against generated.json and this config, then
the job's own evaluation (Run.stages.evaluate) into DIR/eval and DIR/report.*."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pdiff.config import Stage
from pdiff.errors import ConfigError, GeneratorError
from pdiff.pipeline.generate_stage import GENERATED_META, generated_damage
from pdiff.pipeline.run_context import Run
from pdiff.pipeline.stage_dirs import changed_inputs, stage_inputs


def run_evaluate(run: Run) -> dict:
    """The job's evaluation of the generated models, once they are the ones this config makes;
    returns the report."""
    check_generated_matches(run.cfg, run.output_dir / "generated")
    return run.stages.evaluate(run)


def check_generated_matches(cfg: DictConfig, generated_dir: Path) -> None:
    """GeneratorError when generated/ holds no models, or models that are not the ones its
    generated.json describes (replaced, truncated); ConfigError when they were made with another
    config."""
    if not (generated_dir / GENERATED_META).is_file():
        raise GeneratorError(f"no generated models in {generated_dir}: run stage=generate first")
    inputs = stage_inputs(cfg, Stage.generate)
    made_with = changed_inputs(generated_dir, inputs)
    if made_with:
        raise ConfigError(
            f"{generated_dir} was made with another config ({', '.join(made_with[:6])}): run "
            "stage=generate with this config first, or evaluate with the config that made it"
        )
    damage = generated_damage(generated_dir, inputs)
    if damage:
        raise GeneratorError(
            f"{generated_dir} {damage}: run stage=generate with this config to make them again "
            "(the old files go to superseded/)"
        )
