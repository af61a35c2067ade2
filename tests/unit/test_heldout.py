"""Task families, their held-out splits, the baselines' weight operations and the
descriptor-conditioned velocity."""

import pytest
import torch
from omegaconf import OmegaConf

from pdiff.config import BootstrapConfig, FamilyConfig
from pdiff.data.datasets import Dataset
from pdiff.errors import ConfigError
from pdiff.generators.nets.velocity import VelocityMLP
from pdiff.heldout.baselines import compose, matched_finetune_steps, swap_outputs
from pdiff.heldout.collect import TaskRecipe, collect_tasks, head_name, run_pairs, task_network
from pdiff.heldout.evaluate import BASELINES, REFERENCE, summarize_margins
from pdiff.heldout.families import SubsetFamily, check_family
from pdiff.zoo.params import read_vector
from tests.helpers.configs import compose_config

FAMILY = SubsetFamily(10)
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


def test_complement_split_holds_out_codes_whose_complements_are_not_trained_on_either():
    split = FAMILY.split(family_cfg(train_tasks=200, held_out=20, split_seed=3))
    assert len(split.train) == 200 and len(split.held_out) == 20 and len(set(split.held_out)) == 20
    assert FAMILY.split_check(split) == {
        "held_out_in_training": 0,
        "complement_in_training": 0,
        "symmetric_in_training": 0,
    }
    assert FAMILY.split(family_cfg(train_tasks=200, held_out=20, split_seed=3)) == split
    assert FAMILY.split(family_cfg(train_tasks=200, held_out=20, split_seed=4)) != split


def test_pair_split_holds_out_every_code_separating_the_pair_and_trains_on_none():
    split = FAMILY.split(family_cfg(split="pair", pair=[2, 5], train_tasks=200, held_out=25))
    assert all((code >> 2 & 1) != (code >> 5 & 1) for code in split.held_out)
    assert all((code >> 2 & 1) == (code >> 5 & 1) for code in split.train)
    assert set(FAMILY.split_check(split).values()) == {0}
    with pytest.raises(ConfigError, match="task.family.train_tasks=600 is more than the 510 codes"):
        FAMILY.split(family_cfg(split="pair", train_tasks=600))


def test_split_check_counts_a_held_out_code_whose_complement_is_trained_on():
    from pdiff.heldout.families import TaskSplit

    assert FAMILY.split_check(TaskSplit(train=[FAMILY.complement(5), 9], held_out=[5, 9])) == {
        "held_out_in_training": 1,
        "complement_in_training": 1,
        "symmetric_in_training": 1,
    }


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
            "task.family.eval_split='train' is invalid: allowed: test, val",
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
        check_family(cfg.task, 10)
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
    base = {k: v for k, v in task_network(NET, (6,), {}, 0, 0)[0].state_dict().items()}
    model, spec = task_network(NET, (6,), base, 0, 0)
    swapped = swap_outputs(read_vector(model, spec)[None], spec, head_name(model))[0]
    other, _ = task_network(NET, (6,), base, 0, 0)
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
    base = task_network(NET, (6,), {}, 0, 0)[0].state_dict()
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
    summary = summarize_margins(rows, seed=0, bootstrap=BootstrapConfig(resamples=2000))
    assert (
        summary["nearest_symmetric"]["status"] == "beats"
        and summary["nearest_symmetric"]["low"] > 0
    )
    assert summary[REFERENCE]["status"] == "loses" and summary[REFERENCE]["margin"] == -5.0
    assert summarize_margins(rows, seed=0, bootstrap=BootstrapConfig(resamples=2000)) == summary


def test_fine_tuning_matches_the_flops_of_generating_one_model():
    assert matched_finetune_steps(6 * 100 * 10 * 7, task_params=100, batch_size=10) == 7
    assert matched_finetune_steps(1.0, task_params=100, batch_size=10) == 1


def _a_training_task() -> str:
    """generate.task=[...] naming a task experiment=heldout_subsets's zoo trains on."""
    train = FAMILY.split(compose_config(["experiment=heldout_subsets"]).task.family).train
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
            "is not one of the split's held-out tasks: the evaluate stage scores "
            "held-out tasks only",
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
            "task.family.checkpoints=2",
            "task.family.k_nearest=3",
            "task.collect.runs=2",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    assert cfg.task.param.k == 8 and cfg.evaluate.baselines.average_of == 16
    preflight(cfg, [Stage.collect, Stage.train, Stage.generate, Stage.evaluate])


def test_evaluation_scores_only_held_out_tasks_and_says_so_before_eval_is_touched(tmp_path):
    from pdiff.pipeline.heldout_evaluate_stage import scored_tasks

    assert scored_tasks([5, 9, 12], [9, 9, 5, 5], tmp_path) == [5, 9]  # the split's order
    with pytest.raises(
        ConfigError, match=r"holds models for task\(s\) \[3\], which the zoo did not hold out"
    ):
        scored_tasks([5, 9], [9, 9, 3, 3], tmp_path)


def test_one_task_without_controls_is_summarized_as_ties_without_random_descriptor():
    row = {
        "generated_mean": 80.0,
        "baselines": {
            REFERENCE: 85.0,
            **{name: 70.0 for name in BASELINES if name != "random_descriptor"},
        },
    }
    summary = summarize_margins([row], seed=0, bootstrap=BootstrapConfig(resamples=2000))
    assert set(summary) == {REFERENCE, *BASELINES} - {"random_descriptor"}
    assert {entry["status"] for entry in summary.values()} == {"ties"} and summary["nearest"][
        "margin"
    ] == 10.0
