"""The main job's evaluate stage: every population's test predictions (the only place test labels
are read), the memorisation table, the verdict with its intervals, the report and its plots; cached
by the models' and the test data's digests."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from pdiff import atomic
from pdiff.config import EvalSplit, Stage
from pdiff.evaluation.baseline_populations import point_baselines
from pdiff.evaluation.costs import RECALIBRATION_KEY, cost_per_model
from pdiff.evaluation.intervals import bootstrap_accuracies, percentile_interval
from pdiff.evaluation.keep_best import keep_best, trained_pool
from pdiff.evaluation.memorization import evaluate_populations, memorization_normalizer
from pdiff.evaluation.predictions import ParameterEvaluator
from pdiff.evaluation.report import build_report, summarize_accuracies, write_report
from pdiff.evaluation.report_tracking import log_report
from pdiff.evaluation.verdict import compute_verdict, verdict_sentences
from pdiff.evaluation.zoo_check import zoo_check
from pdiff.generators import design_class
from pdiff.pipeline.collect_stage import base_model
from pdiff.pipeline.generate_stage import EVALUATE_TIMINGS, GENERATED_PARAMS, evaluation_outputs
from pdiff.pipeline.run_context import Run
from pdiff.pipeline.stage_dirs import changed_inputs, claim_stage_dir, stage_inputs, supersede
from pdiff.seeds import Purpose, generator_for
from pdiff.zoo.params import is_entire_state
from pdiff.zoo.store import ParamZoo, load_base_weights

EVAL_PREDICTIONS = "predictions.safetensors"
EVAL_MEMORIZATION = "memorization.json"
GENERATED_DIGEST = (
    "generated_sha256"  # the predictions' metadata: the generated models they were made from
)
TEST_DIGEST = "test_sha256"  # the test data they were made on
ZOO_DIGESTS = (
    "zoo_sha256"  # and the zoo's files (its checkpoints and the base model they are written into)
)


def evaluate_main_job(run: Run) -> dict:
    """Predictions of every population on the test set (its labels are read here and nowhere
    before; the validation set with evaluate.split=val), the memorisation table, the verdict with
    its intervals, the report and its plots."""
    cfg, generated_dir = run.cfg, run.output_dir / "generated"
    directory = run.dir("eval")
    inputs = stage_inputs(cfg, Stage.evaluate)
    zoo = ParamZoo.load(run.output_dir / "zoo")
    x_scored, y_scored = scored_split(run)
    results, table_path = directory / EVAL_PREDICTIONS, directory / EVAL_MEMORIZATION
    made_from = {
        GENERATED_DIGEST: atomic.sha256(generated_dir / GENERATED_PARAMS),
        TEST_DIGEST: tensors_digest(x_scored, y_scored),
        ZOO_DIGESTS: json.dumps(zoo.meta["sha256"], sort_keys=True),
    }
    stale, changed = (
        results.is_file() and _cached_from(results) != made_from,
        changed_inputs(directory, inputs),
    )
    if stale and not changed:  # (a change of inputs moves them aside below, naming the keys)
        supersede(
            directory,
            "holds predictions of other models or test data",
            evaluation_outputs(run.output_dir),
        )
    if stale or changed:
        run.forget_times(
            EVALUATE_TIMINGS
        )  # they measured another test set, other models or other settings
    claim_stage_dir(
        directory, inputs, keep_on_change=False, companions=evaluation_outputs(run.output_dir)
    )
    generated = atomic.read_safetensors(generated_dir / GENERATED_PARAMS)["params"]
    normalizer = memorization_normalizer(zoo.spec, zoo.vectors)
    if results.is_file() and table_path.is_file():
        predictions, table = atomic.read_safetensors(results), json.loads(table_path.read_text())
    else:
        started = time.perf_counter()
        (predict_test, predict_val), test_evaluator, entire = _predictors(run, zoo, x_scored)
        # a vector that is the whole network, not recalibrated, scores on validation as it did
        # when it was collected: the zoo's accuracies are its predictions' (measured equal)
        originals_as_collected = entire and not cfg.evaluate.recalibrate_batches
        predictions, table = evaluate_populations(
            predict_test,
            zoo.vectors,
            zoo.val_accuracy,
            generated,
            normalizer,
            y_scored.cpu().clone(),  # saved beside y_val: never the same tensor
            cfg.seed,
            cfg.evaluate.baselines,
        )
        predictions.update({"val:generated": predict_val(generated).to(torch.int16)})
        if not originals_as_collected:  # the zoo's own accuracies would differ
            predictions["val:originals"] = predict_val(zoo.vectors).to(torch.int16)
        predictions["y_val"] = run.data.y_val.cpu()
        atomic.write_safetensors(results, predictions, metadata=made_from)
        atomic.write_json(table_path, table)
        if (
            "evaluate" not in run.saved_times()
        ):  # the first complete evaluation of these models on this test set
            if test_evaluator.recalibrated:
                run.record_time(RECALIBRATION_KEY, test_evaluator.recalibration_seconds_per_model)
            run.record_time("evaluate", time.perf_counter() - started)
    y_test, y_val = predictions.pop("y_test"), predictions.pop("y_val")
    per_model = {name: predictions.pop(name) for name in list(predictions) if ":" in name}
    correct = {name: p == y_test for name, p in predictions.items()}
    accuracies = {name: c.double().mean(1) * 100 for name, c in correct.items()}
    saved = run.saved_times()
    report = build_report(
        cfg.task.name, zoo.k, zoo.spec.dim, accuracies["originals"], accuracies["generated"], saved
    )
    val_accuracy = {  # the originals': the zoo's own, measured on these inputs at collection
        key: (per_model.pop(f"val:{key}") == y_val).double().mean(1) * 100
        if f"val:{key}" in per_model
        else zoo.val_accuracy.double()
        for key in ("originals", "generated")
    }
    report["validation"] = {
        name: summarize_accuracies(val_accuracy[key])
        for name, key in (("original", "originals"), ("generated", "generated"))
    }
    bootstrap = cfg.evaluate.bootstrap
    pool = trained_pool(zoo.meta["checkpoint_run"])
    report["keep_best"] = keep_best(
        {"trained": correct["originals"][pool], "generated": correct["generated"]},
        {"trained": val_accuracy["originals"][pool], "generated": val_accuracy["generated"]},
        bootstrap.resamples,
        cfg.seed,
        bootstrap.confidence,
    )
    report["cost"] = cost_per_model(saved, zoo.meta["runs"], zoo.k, len(generated))
    resampled = bootstrap_accuracies(correct, bootstrap.resamples, cfg.seed)
    for name, row in table.items():
        if isinstance(row, dict):
            row["acc_interval"] = [
                round(v, 4) for v in percentile_interval(resampled[name], bootstrap.confidence)
            ]
    report["memorization"] = table
    report["n_test"] = len(y_test)
    report["split"] = EvalSplit(cfg.evaluate.split).value
    report["verdict"] = compute_verdict(
        table, resampled, point_baselines(cfg.evaluate.baselines), bootstrap.confidence
    )
    report["zoo_check"] = zoo_check(report, resampled, list(cfg.evaluate.baselines.noise_scales))
    report["ignored_overrides"] = list(cfg.ignored_overrides)
    write_report(
        run.output_dir,
        report,
        accuracies,
        per_model,
        len(y_test),
        {"originals": zoo.vectors, "generated": generated},
        verdict_sentences(report["verdict"], table),
        phases=design_class(cfg).phases,
        normalizer=normalizer,
    )
    log_report(run.tracker, report, accuracies, sorted(run.output_dir.glob("*.png")))
    return report


def scored_split(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and labels every population is scored on: the test split, or (evaluate.split=val,
    to choose settings) the validation split."""
    if EvalSplit(run.cfg.evaluate.split) is EvalSplit.val:
        return run.data.x_val, run.data.y_val
    return run.data.x_test, run.data.y_test


def _cached_from(results: Path) -> dict:
    """What cached predictions were made from (their metadata: the digests of the generated models,
    the test data and the zoo)."""
    meta = atomic.read_safetensors_metadata(results)
    return {key: meta.get(key) for key in (GENERATED_DIGEST, TEST_DIGEST, ZOO_DIGESTS)}


def tensors_digest(*tensors: torch.Tensor) -> str:
    """sha256 of tensors' dtypes, shapes and values (the test data predictions were made on)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{array.dtype}:{tuple(array.shape)}".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def _predictors(
    run: Run, zoo: ParamZoo, x_scored: torch.Tensor
) -> tuple[list, ParameterEvaluator, bool]:
    """Functions [M, D] vectors -> [M, N] predicted classes of the base network with those vectors
    written in: on the scored inputs (test, or validation), and on the validation inputs; the test inputs' evaluator (it
    times recalibration); and whether a vector is the network's entire state."""
    cfg = run.cfg
    model, _ = base_model(run)
    model.load_state_dict(load_base_weights(run.output_dir / "zoo"))
    recalibration = _recalibration(run)
    predictors, evaluators = [], []
    for inputs in (x_scored, run.data.x_val):
        with run.task_autocast():
            evaluator = ParameterEvaluator(
                model,
                zoo.spec,
                inputs,
                cfg.evaluate.chunk_size,
                cfg.evaluate.batched,
                cfg.data.eval_batch_size,
                recalibration,
            )

        def predict(
            vectors: torch.Tensor, evaluator: ParameterEvaluator = evaluator
        ) -> torch.Tensor:
            with run.task_autocast():
                return evaluator.predictions(vectors)

        predictors.append(predict)
        evaluators.append(evaluator)
    return predictors, evaluators[0], is_entire_state(model, zoo.spec)


def _recalibration(run: Run) -> list[torch.Tensor] | None:
    """The training batches every model's BatchNorm statistics are re-estimated on
    (evaluate.recalibrate_batches)."""
    batches, size = run.cfg.evaluate.recalibrate_batches, run.cfg.data.eval_batch_size
    if not batches:
        return None
    order = torch.randperm(
        len(run.data.x_train), generator=generator_for(run.cfg.seed, Purpose.recalibration)
    )
    return [
        run.data.x_train[order[i * size : (i + 1) * size].to(run.device)]
        for i in range(batches)
        if i * size < len(order)
    ]
