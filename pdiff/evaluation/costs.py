"""What a model costs here: seconds per SGD-trained model of the zoo against seconds per generated
model."""

from __future__ import annotations

RECALIBRATION_KEY = (
    "recalibrate_per_model"  # timings.json: seconds to re-estimate one model's BatchNorm statistics
)
RUN_KEY_PREFIX = (
    "collect_run_"  # timings.json: collect_run_<index>, the seconds of one collection run
)


def run_key(index: int) -> str:
    return f"{RUN_KEY_PREFIX}{index}"


def collection_seconds(timings: dict[str, float], runs: int) -> float | None:
    """The zoo's SGD time: the shared base model plus every collection run (None if a run's time is
    missing)."""
    parts = [timings.get(run_key(index)) for index in range(runs)]
    if any(part is None for part in parts):
        return None
    return timings.get("collect_base", 0.0) + sum(parts)


def cost_per_model(timings: dict[str, float], runs: int, k: int, n_generated: int) -> dict:
    """Seconds per SGD-trained model (per independent run, per checkpoint) and per generated model:
    the generator's training and sampling spread over its n models plus each model's recalibration
    ("amortised"), and sampling plus recalibration once a generator exists ("marginal")."""
    sgd = collection_seconds(timings, runs)
    train = sum(seconds for key, seconds in timings.items() if key.startswith("train_"))
    generate, recalibrate = timings.get("generate", 0.0), timings.get(RECALIBRATION_KEY, 0.0)
    return {
        "sgd_per_run_s": None if sgd is None else round(sgd / runs, 4),
        "sgd_per_checkpoint_s": None if sgd is None else round(sgd / k, 4),
        "generated_amortised_s": round((train + generate) / n_generated + recalibrate, 4),
        "generated_marginal_s": round(generate / n_generated + recalibrate, 4),
        "generator_train_s": round(train, 3),
        "generate_s": round(generate, 3),
        "recalibrate_per_model_s": round(recalibrate, 4),
    }
