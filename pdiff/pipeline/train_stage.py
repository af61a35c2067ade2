"""The train stage: the generator design trained on the zoo's best checkpoints into DIR/generator,
its weights + generator.json (written last: the design's meta, the ranks and hosts that trained it,
the stage's inputs); skip-if-done."""

from __future__ import annotations

import logging

from pdiff.config import Stage, to_container
from pdiff.generators import design_class, generator_exists
from pdiff.pipeline.run_context import Run
from pdiff.pipeline.stage_dirs import RECORD_KEY, claim_stage_dir, stage_inputs
from pdiff.training import distributed
from pdiff.zoo.store import ParamZoo

log = logging.getLogger(__name__)


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
