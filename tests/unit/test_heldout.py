"""Task families (subsets and variants), their three-way splits and split checks, the baselines'
weight operations, ridge leaving one task out, the step sweep and the descriptor-conditioned
velocity."""

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from pdiff.config import BootstrapConfig, FamilyConfig
from pdiff.data.datasets import Dataset
from pdiff.errors import ConfigError
from pdiff.generators.nets.velocity import VelocityMLP
from pdiff.heldout.baselines import TaskZoo, compose, head_columns, swap_outputs
from pdiff.heldout.collect import TaskRecipe, collect_tasks, head_name, run_pairs, task_network
from pdiff.heldout.evaluate import (
    REFERENCE,
    baseline_names,
    matched_finetune_steps,
    summarize_margins,
    worth_steps,
)
from pdiff.heldout.families import check_family
from pdiff.heldout.split import TaskSplit
from pdiff.heldout.subsets import SubsetFamily
from pdiff.heldout.variants import VariantFamily
from pdiff.zoo.params import read_vector
from tests.helpers.configs import compose_config

FAMILY = SubsetFamily(10)
BASELINES = baseline_names(FAMILY, [0, 10, 30, 100])
NET = {"_target_": "pdiff.data.tasknets.mlp_bn", "hidden": [8], "batch_norm": False}


def family_cfg(**values):
    return OmegaConf.merge(OmegaConf.structured(FamilyConfig), values)


def test_codes_descriptors_labels_and_complements():
    assert len(FAMILY.codes) == 1022 and FAMILY.descriptor([0b101])[0, :3].tolist() == [
        1.0,
        0.0,
        1.0,
    ]
    y = torch.tensor([0, 1, 2, 3])
    assert FAMILY.labels(0b101, y).tolist() == [1, 0, 1, 0]
    assert FAMILY.labels(FAMILY.complement(0b101), y).tolist() == [0, 1, 0, 1]
    assert FAMILY.code_of([0, 2]) == 0b101
    with pytest.raises(ConfigError, match=r"generate.task=\[12\] is invalid"):
        FAMILY.code_of([12])
    assert FAMILY.distances(0b1, [0b11, FAMILY.complement(0b11)], symmetric=False).tolist() == [
        1,
        9,
    ]
    assert FAMILY.distances(0b1, [0b11, FAMILY.complement(0b11)], symmetric=True).tolist() == [1, 1]


def test_complement_split_holds_out_validation_and_test_codes_no_complement_of_which_is_trained():
    cfg = family_cfg(train_tasks=200, held_out=20, val_tasks=20)
    split = FAMILY.split(cfg, seed=3)
    assert (len(split.train), len(split.val), len(split.test)) == (200, 20, 20)
    assert len(set(split.held_out)) == 40 and not set(split.held_out) & set(split.train)
    assert not {FAMILY.complement(code) for code in split.held_out} & set(split.held_out)
    assert set(FAMILY.split_check(split.train, split, cfg).values()) == {0}
    assert not set(split.unused) & (set(split.train) | set(split.held_out))
    assert not {FAMILY.complement(code) for code in split.held_out} & set(split.unused)
    assert FAMILY.split(cfg, seed=3) == split
    assert FAMILY.split(cfg, seed=4) != split  # split_seed follows the seed
    pinned = family_cfg(train_tasks=200, held_out=20, val_tasks=20, split_seed=3)
    assert FAMILY.split(pinned, seed=4) == split


def test_pair_split_holds_out_distinct_codes_separating_the_pair_and_trains_on_none():
    cfg = family_cfg(split="pair", pair=[2, 5], train_tasks=200, held_out=25, val_tasks=5)
    split = FAMILY.split(cfg, seed=0)
    assert all(FAMILY.separates(code, [2, 5]) for code in split.held_out)
    assert not any(FAMILY.separates(code, [2, 5]) for code in split.train)
    assert not {FAMILY.complement(code) for code in split.held_out} & set(split.held_out)
    assert set(FAMILY.split_check(split.train, split, cfg).values()) == {0}
    with pytest.raises(ConfigError, match="task.family.train_tasks=600 is more than the 510 codes"):
        FAMILY.split(family_cfg(split="pair", train_tasks=600), seed=0)


def test_split_check_counts_from_the_stored_tasks():
    cfg = family_cfg(split="pair", pair=[0, 1])
    split = TaskSplit(train=[], val=[5, 9], test=[9, 2], unused=[])
    stored = [FAMILY.complement(5), 9, 0b11]  # what the zoo's task column holds
    assert FAMILY.split_check(stored, split, cfg) == {
        "held_out_in_training": 2,
        "complement_in_training": 1,
        "val_in_test": 1,
        "complement_across_held_out": 0,
        "separating_pair_in_training": 2,  # the complement of 5 (bits 0, 1 differ) and 9
    }


def test_variants_are_mnist1d_settings_held_out_inside_and_outside_the_training_range(tmp_path):
    family = VariantFamily(compose_config([]).data.mnist1d, str(tmp_path), 400)
    assert family.settings(0) != family.settings(1)
    cfg = family_cfg(name="variants", train_tasks=200, held_out=20, val_tasks=10)
    split = family.split(cfg, seed=0)
    assert all(family.inside(task) for task in split.train)
    assert [family.inside(task) for task in split.test] == [True] * 10 + [False] * 10
    assert [family.inside(task) for task in split.val] == [True] * 5 + [False] * 5
    assert set(family.split_check(split.train, split, cfg).values()) == {0}
    assert family.split_check([*split.train, split.test[-1]], split, cfg) == {
        "held_out_in_training": 1,
        "settings_in_training": 1,
        "val_in_test": 0,
        "outside_range_in_training": 1,
    }
    assert family.split(cfg, seed=1) != split
    task = split.test[0]
    data = family.task_data(task, None, with_test=True)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (150, 50, 200)
    assert data.num_classes == 10 and set(data.y_test.tolist()) == set(range(10))
    again, other = family.task_data(task, None), family.task_data(split.test[1], None)
    assert len(again.y_test) == 0  # the test split only when the evaluate stage asks for it
    assert torch.equal(again.x_train, data.x_train)  # cached, and checked on the way back
    assert not torch.equal(other.x_train, data.x_train)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["task.param.k=7"],
            "task.param.k=7 is invalid: a zoo of many tasks holds task.family.train_tasks x seeds x "
            "checkpoints = 1000",
        ),
        (
            ["task.family.pair=[3,3]"],
            "task.family.pair=[3, 3] is invalid: must be two different classes",
        ),
        (
            ["task.family.eval_split=train"],
            "task.family.eval_split='train' is invalid; allowed: val (validation tasks",
        ),
        (
            ["task.family.finetune_steps=[10,0]"],
            "task.family.finetune_steps=[10, 0] is invalid: must be distinct step counts",
        ),
        (
            ["task.family.held_out=500", "task.family.val_tasks=20"],
            "task.family.held_out + val_tasks=520 is invalid: at most 511",
        ),
        (
            ["task.collect.runs=300"],
            "task.collect.runs=300 is invalid: must be <= task.family.train_tasks x seeds = 200",
        ),
    ],
)
def test_a_family_that_cannot_work_is_refused_naming_the_key(overrides, message):
    cfg = compose_config(["experiment=heldout_subsets", *overrides])
    with pytest.raises(ConfigError) as error:
        check_family(cfg, SimpleNamespace(num_classes=10))
    assert message in str(error.value)


def _blobs(n=300, classes=4):
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, 6, generator=generator) * 3
    y = torch.randint(0, classes, (n,), generator=generator)
    x = centres[y] + torch.randn(n, 6, generator=generator)
    return Dataset(x[:200], y[:200], x[200:], y[200:], x[200:], y[200:], classes)


def test_swapping_the_head_turns_the_complement_tasks_model_into_this_tasks():
    data, family = _blobs(), SubsetFamily(4)
    torch.manual_seed(0)
    base = {k: v for k, v in task_network(NET, (6,), {}, 0, 0, 2)[0].state_dict().items()}
    model, spec = task_network(NET, (6,), base, 0, 0, 2)
    swapped = swap_outputs(read_vector(model, spec)[None], spec, head_name(model))[0]
    other, _ = task_network(NET, (6,), base, 0, 0, 2)
    from pdiff.zoo.params import write_vector

    write_vector(other, spec, swapped)
    with torch.no_grad():
        assert torch.equal(model(data.x_val).flip(1), other(data.x_val))
    assert not torch.equal(swapped, read_vector(model, spec))
    perfect = torch.nn.functional.one_hot(data.y_val, 4).float() * 10
    assert torch.equal(compose(perfect, 0b0110, family), family.labels(0b0110, data.y_val))


class Killed(Exception):
    pass


def test_task_collection_resumes_after_the_pairs_it_finished_and_ends_as_an_uninterrupted_one(
    tmp_path, monkeypatch
):
    data, family = _blobs(), SubsetFamily(4)
    base = task_network(NET, (6,), {}, 0, 0, 2)[0].state_dict()
    recipe = TaskRecipe(
        lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=32, epochs=1, checkpoints=2
    )
    pairs = run_pairs([1, 2, 3, 5, 6], seeds=2, index=1, runs=2)
    assert pairs == [(3, 1), (5, 0), (5, 1), (6, 0), (6, 1)]
    whole = collect_tasks(pairs, family, data, NET, base, recipe, 0, tmp_path / "a.safetensors")
    calls, dies_at = [], [3]

    def dies_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) in dies_at:
            raise Killed
        return train_task(*args, **kwargs)

    from pdiff.heldout import collect

    train_task = collect.train_task
    monkeypatch.setattr(collect, "train_task", dies_on_third)
    with pytest.raises(Killed):
        collect_tasks(pairs, family, data, NET, base, recipe, 0, tmp_path / "b.safetensors")
    calls.clear()
    dies_at.clear()
    resumed = collect_tasks(pairs, family, data, NET, base, recipe, 0, tmp_path / "b.safetensors")
    assert len(calls) == 3  # only the three unfinished pairs trained again
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert whole["task"].tolist() == [3, 3, 5, 5, 5, 5, 6, 6, 6, 6]
    assert torch.equal(whole["descriptor"][0], family.descriptor([3])[0])


def test_the_velocity_sees_a_descriptor_or_the_null_condition():
    velocity = VelocityMLP(5, 16, 2, 8, conditional=True, condition_dim=10)
    torch.nn.init.normal_(velocity.out[-1].weight)
    x, t = torch.randn(4, 5), torch.rand(4)
    codes = FAMILY.descriptor([1, 2, 3, 4])
    keep, drop = torch.ones(4, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)
    assert not torch.allclose(velocity(x, t, codes, keep), velocity(x, t, codes, drop))
    assert torch.allclose(velocity(x, t, codes, drop), velocity(x, t, codes.flip(0), drop))
    assert not torch.allclose(
        velocity(x, t, codes, keep)[0], velocity(x, t, codes.flip(0), keep)[0]
    )


def test_margins_get_intervals_over_tasks_and_a_status():
    def row(generated, nearest):
        return {
            "generated_mean": generated,
            "baselines": {
                **{name: 50.0 for name in (REFERENCE, *BASELINES)},
                "nearest_symmetric": nearest,
                REFERENCE: generated + 5,
            },
        }

    rows = [row(70 + i % 3, 65 + i % 2) for i in range(12)]
    summary = summarize_margins(rows, BASELINES, seed=0, bootstrap=BootstrapConfig(resamples=2000))
    assert (
        summary["nearest_symmetric"]["status"] == "beats"
        and summary["nearest_symmetric"]["low"] > 0
    )
    assert summary[REFERENCE]["status"] == "loses" and summary[REFERENCE]["margin"] == -5.0
    again = summarize_margins(rows, BASELINES, seed=0, bootstrap=BootstrapConfig(resamples=2000))
    assert again == summary


def test_fine_tuning_matches_the_flops_of_generating_one_model():
    assert matched_finetune_steps(6 * 100 * 10 * 7, task_params=100, batch_size=10) == 7
    assert matched_finetune_steps(1.0, task_params=100, batch_size=10) == 1


def test_generation_is_worth_the_steps_where_the_sweep_meets_its_accuracy():
    def rows(generated):
        curve = {"finetuned_0": 60.0, "finetuned_10": 70.0, "finetuned_100": 80.0}
        return [{"generated_mean": generated, "baselines": {**curve, "finetuned_matched": 75.0}}]

    assert worth_steps(rows(65.0), [0, 10, 100], 30)["steps"] == 5.0
    assert worth_steps(rows(77.5), [0, 10, 100], 30)["steps"] == 65.0  # between 30 and 100
    assert worth_steps(rows(50.0), [0, 10, 100], 30)["steps"] == 0.0
    beyond = worth_steps(rows(90.0), [0, 10, 100], 30)
    assert beyond["steps"] is None and beyond["beyond"] == 100
    assert list(beyond["curve"]) == ["0", "10", "30", "100"]


def test_ridge_chooses_its_penalty_leaving_one_task_out():
    """A zoo whose weights are an exact linear map of the descriptor: leaving one task out picks the
    smallest penalty, and the map's vector for an unseen task is recovered."""
    family, codes = SubsetFamily(6), list(range(1, 40))
    generator = torch.Generator().manual_seed(0)
    weights, offset = torch.randn(6, 30, generator=generator), torch.randn(30, generator=generator)
    vectors = ((2 * family.descriptor(codes) - 1) @ weights + offset).repeat_interleave(3, 0)
    tasks = torch.tensor(codes).repeat_interleave(3)
    zoo = SimpleNamespace(vectors=vectors, tasks=SimpleNamespace(task=tasks))
    ridge = TaskZoo(zoo, family, "head")
    assert ridge.ridge_alpha == 1e-3
    expected = (2 * family.descriptor([50]) - 1) @ weights + offset
    assert torch.allclose(ridge.ridge([50]), expected, atol=1e-2)
    noisy = SimpleNamespace(
        vectors=torch.randn(len(tasks), 30, generator=generator),
        tasks=SimpleNamespace(task=tasks),
    )
    assert TaskZoo(noisy, family, "head").ridge_alpha > 1.0  # no map: the penalty grows


def _a_training_task() -> str:
    """generate.task=[...] naming a task experiment=heldout_subsets's zoo trains on."""
    train = FAMILY.split(compose_config(["experiment=heldout_subsets"]).task.family, seed=0).train
    return f"generate.task=[{','.join(map(str, FAMILY.classes_of(train[0])))}]"


# The design is checked before the one-task checks (guidance, average_of), and the family's counts
# before task.param.k that follows from them: each refusal names what to change.
@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["generator=flow"],
            "generator.design='flow' (generator.condition=False) cannot generate for a task",
        ),
        (
            ["generator=latent"],
            "generator.design='latent' (generator.condition=None) cannot generate for a task",
        ),
        (
            ["generator=token"],
            "generator.design='token' (generator.condition=None) cannot generate for a task",
        ),
        (["task.family.seeds=0"], "task.family.seeds=0 is invalid: must be >= 1"),
        (
            ["task.family.train_tasks=12", "task.family.k_nearest=1000"],
            "task.family.k_nearest=1000 is invalid: must be <= task.family.train_tasks=12",
        ),
        (
            ["stage=generate", "generate.task=[3,10]"],
            "generate.task=[3.0, 10.0] is invalid: list the classes of a non-empty proper subset of the 10 classes",
        ),
        (
            ["stage=generate", "generate.task=[0,0]"],
            "generate.task=[0.0, 0.0] is invalid: it names class(es) [0] more than once",
        ),
        (
            ["stage=evaluate", _a_training_task()],
            "is not one of the split's test tasks: the evaluate stage scores those only",
        ),
    ],
)
def test_a_run_on_many_tasks_is_refused_before_any_work(overrides, message, tmp_path):
    from pdiff.pipeline.run import run_pipeline

    cfg = compose_config(
        ["experiment=heldout_subsets", *overrides, f"paths.output_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(ConfigError) as error:
        run_pipeline(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_small_family_zoo_is_not_held_to_the_one_task_evaluation(tmp_path):
    """evaluate.baselines.average_of=16 (the one-task evaluation's) is more than this zoo's K=8;
    never read here."""
    from pdiff.config import Stage
    from pdiff.pipeline.run import preflight

    cfg = compose_config(
        [
            "experiment=heldout_subsets",
            "task.family.train_tasks=4",
            "task.family.held_out=2",
            "task.family.val_tasks=2",
            "task.family.checkpoints=2",
            "task.family.k_nearest=3",
            "task.collect.runs=2",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    assert cfg.task.param.k == 8 and cfg.evaluate.baselines.average_of == 16
    preflight(cfg, [Stage.collect, Stage.train, Stage.generate, Stage.evaluate])


def test_evaluation_scores_only_held_out_tasks_and_says_so_before_eval_is_touched(tmp_path):
    from pdiff.heldout.split import EvalSplit
    from pdiff.pipeline.heldout_evaluate_stage import scored_tasks

    split = TaskSplit(train=[1, 2], val=[7], test=[5, 9, 12], unused=[])
    generated = [9, 9, 5, 5, 7, 7]
    assert scored_tasks(split, EvalSplit.test, generated, tmp_path) == [5, 9]  # the split's order
    assert scored_tasks(split, EvalSplit.val, generated, tmp_path) == [7]
    with pytest.raises(
        ConfigError, match=r"holds models for task\(s\) \[3\], which the zoo did not hold out"
    ):
        scored_tasks(split, EvalSplit.test, [9, 9, 3, 3], tmp_path)
    with pytest.raises(ConfigError, match="holds no models for the val tasks"):
        scored_tasks(split, EvalSplit.val, [9, 9], tmp_path)


def test_the_two_families_carry_their_own_baselines():
    variants = VariantFamily(None, None, 400)
    assert "composed" in BASELINES and "nearest_symmetric" in BASELINES
    assert "pooled" not in BASELINES
    assert set(baseline_names(variants, [0, 10])) == (
        set(BASELINES) - {"composed", "nearest_symmetric", "finetuned_30", "finetuned_100"}
    ) | {"pooled"}


def test_one_task_without_controls_is_summarized_as_ties_without_random_descriptor():
    row = {
        "generated_mean": 80.0,
        "baselines": {
            REFERENCE: 85.0,
            **{name: 70.0 for name in BASELINES if name != "random_descriptor"},
        },
    }
    summary = summarize_margins([row], BASELINES, seed=0, bootstrap=BootstrapConfig(resamples=2000))
    assert set(summary) == {REFERENCE, *BASELINES} - {"random_descriptor"}
    assert {entry["status"] for entry in summary.values()} == {"ties"} and summary["nearest"][
        "margin"
    ] == 10.0


def test_the_linear_probe_trains_the_head_alone_and_the_sweep_reads_each_step_count():
    from pdiff.heldout.evaluate import HeldOutInputs, Scorer, finetune_sweep, trained_models
    from pdiff.heldout.split import EvalSplit

    data, family = _blobs(), SubsetFamily(4)
    torch.manual_seed(0)
    base = task_network(NET, (6,), {}, 0, 0, 4)[0].state_dict()  # a 4-class base model
    recipe = TaskRecipe(
        lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=32, epochs=1, checkpoints=2
    )
    inputs = HeldOutInputs(
        data, EvalSplit.val, NET, base, None, recipe, 0, 2, 1, [0, 3], 7, None, lambda v: v
    )
    scorer = Scorer(inputs, family.outputs)
    task = family.task_data(0b0110, data)
    head = head_columns(scorer.spec, head_name(scorer.model))
    start = read_vector(scorer.network(0), scorer.spec)
    probe = trained_models(0b0110, task, inputs, scorer, probe=True)
    trained = trained_models(0b0110, task, inputs, scorer, probe=False)
    hidden = torch.ones(len(start), dtype=torch.bool)
    hidden[head] = False
    assert probe.shape == trained.shape == (4, len(start))  # 2 task seeds x 2 checkpoints
    assert torch.equal(probe[:, hidden], start[hidden].expand(4, -1))
    assert not torch.equal(probe[:, head], start[head].expand(4, -1))
    assert not torch.equal(trained[:, hidden], start[hidden].expand(4, -1))
    sweep = finetune_sweep(0b0110, trained[:1], task, inputs, scorer)
    assert sorted(sweep) == [0, 3, 7] and torch.equal(sweep[0][0], trained[0])
    assert not torch.equal(sweep[3], sweep[7])


def test_the_descriptor_map_recovers_a_linear_map_and_shrinks_when_there_is_none():
    from pdiff.heldout.ridge import fit_task_ridge

    generator = torch.Generator().manual_seed(0)
    descriptors = FAMILY.descriptor(list(range(1, 1021, 17))).repeat_interleave(4, 0)
    weight, bias = torch.randn(10, 5, generator=generator), torch.randn(5, generator=generator)
    rows = descriptors @ weight + bias + 0.01 * torch.randn(240, 5, generator=generator)
    ridge = fit_task_ridge(descriptors, rows)
    assert ridge.alpha <= 1e-2 and torch.allclose(ridge.weight.float(), weight, atol=0.05)
    unseen = FAMILY.descriptor([300])
    assert torch.allclose(ridge(unseen).float(), unseen @ weight + bias, atol=0.1)
    noise = torch.randn(240, 5, generator=generator)
    assert fit_task_ridge(descriptors, noise).alpha >= 10.0  # nothing to map: the penalty grows


def test_a_descriptor_map_without_a_zoo_of_many_tasks_is_named_as_an_override_never_read():
    from pdiff.pipeline.unread import unread_overrides

    overrides = ["generator=flow_pca", "generator.descriptor_map=true"]
    one_task = compose_config(["task=mnist1d_mlp", *overrides])
    assert unread_overrides(one_task, overrides) == [
        "generator.descriptor_map=true (read only by a zoo of many tasks; this run has "
        "task.family.name=none)"
    ]
    many = compose_config(["experiment=heldout_subsets", *overrides])
    assert unread_overrides(many, overrides) == []
