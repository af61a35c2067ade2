"""Seeds: every stream is (seed, purpose, index) through SeedSequence, so no two purposes or indices
meet."""

from __future__ import annotations

import pytest
import torch

from pdiff.config import SEED_MAX, validate
from pdiff.errors import ConfigError
from pdiff.evaluation.intervals import bootstrap_accuracies
from pdiff.seeds import Purpose, derive_seed, generator_for
from tests.helpers.configs import compose_config

STEP_PURPOSES = (Purpose.batch_noise, Purpose.epoch_order, Purpose.augment)


@pytest.mark.parametrize("seed", [0, 1, 7, 2**32, SEED_MAX])
def test_no_two_purposes_or_indices_share_a_stream(seed):
    """At realistic ranges (3,000 steps or epochs, 256 runs): every (purpose, index) of one seed has
    its own seed, and at seed 0 the old collisions (augment step i = epoch order i; batch noise i =
    epoch order i + 17) are gone."""
    derived = {}
    for purpose in Purpose:
        for index in range(3000 if purpose in STEP_PURPOSES else 256):
            derived[(purpose, index)] = derive_seed(seed, purpose, index)
    assert len(set(derived.values())) == len(derived)
    assert all(0 <= value <= SEED_MAX for value in derived.values())


def test_seeds_of_neighbouring_runs_never_meet():
    """Run seeds 0..19 with every purpose and index: no stream of one run is a stream of another."""
    seen = [
        derive_seed(seed, purpose, index)
        for seed in range(20)
        for purpose in Purpose
        for index in range(200)
    ]
    assert len(set(seen)) == len(seen)


def test_named_indices_are_stable_and_distinct_from_numbered_ones():
    named = derive_seed(3, Purpose.bootstrap, "models:generated")
    assert named == derive_seed(3, Purpose.bootstrap, "models:generated")
    assert derive_seed(3, Purpose.bootstrap, "models:generated") != derive_seed(
        3, Purpose.bootstrap, "models:noise"
    )
    assert derive_seed(3, Purpose.bootstrap, "0") != derive_seed(3, Purpose.bootstrap, 0)
    a = torch.randn(4, generator=generator_for(3, Purpose.sampling))
    assert torch.equal(a, torch.randn(4, generator=generator_for(3, Purpose.sampling)))


@pytest.mark.parametrize(
    "seed, ok", [(0, True), (SEED_MAX, True), (SEED_MAX + 1, False), (-1, False)]
)
def test_the_run_seed_is_checked_against_the_range_torch_takes(seed, ok, tmp_path):
    cfg = compose_config([f"seed={seed}", f"paths.output_dir={tmp_path / 'run'}"])
    if ok:
        validate(cfg)
        torch.Generator().manual_seed(derive_seed(seed, Purpose.base))
        return
    with pytest.raises(
        ConfigError, match=rf"seed={seed} is invalid: must be an integer in \[0, 2\*\*63 - 1\]"
    ):
        validate(cfg)


def test_the_bootstrap_of_a_population_does_not_depend_on_the_others_or_their_order():
    """Predictions read back in another key order (a cache), or another population added, give every
    population the same resampled accuracies: each population's models are drawn from a stream named
    after it."""
    rng = torch.Generator().manual_seed(0)
    correct = {
        name: torch.rand(6, 300, generator=rng) > p
        for name, p in (("originals", 0.3), ("generated", 0.35), ("noise_0.1", 0.5))
    }
    first = bootstrap_accuracies(correct, 200, seed=4)
    reordered = bootstrap_accuracies(dict(reversed(list(correct.items()))), 200, seed=4)
    fewer = bootstrap_accuracies(
        {key: correct[key] for key in ("generated", "originals")}, 200, seed=4
    )
    for name in correct:
        assert torch.equal(first[name], reordered[name]), name
    for name in fewer:
        assert torch.equal(first[name], fewer[name]), name
    assert not torch.equal(
        first["originals"], bootstrap_accuracies(correct, 200, seed=5)["originals"]
    )
