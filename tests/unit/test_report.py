"""The report's training-curve panels follow the design's phases, and its text names the average
baselines by m."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pdiff.config import BaselinesConfig
from pdiff.evaluation import report_plots
from pdiff.evaluation.baseline_populations import FRONTIERS, point_baselines
from pdiff.evaluation.costs import cost_per_model
from pdiff.evaluation.intervals import bootstrap_accuracies
from pdiff.evaluation.keep_best import keep_best
from pdiff.evaluation.report import build_report, write_report
from pdiff.evaluation.report_markdown import render_one_task_markdown
from pdiff.evaluation.report_plots import CURVES_PLOT, NO_ROWS, plot_training_curves
from pdiff.evaluation.verdict import compute_verdict, verdict_sentences
from pdiff.evaluation.zoo_check import zoo_check
from pdiff.pipeline.report_index import ReportIndex
from pdiff.pipeline.run_summary import summary_line
from tests.helpers.configs import CONFIGS

LATENT = {"ae": "Autoencoder (reconstruction)", "diffusion": "Latent DDPM (noise prediction)"}
FLOW = {"flow": "Flow matching (velocity)"}


def _metrics(path, rows: list[dict]):
    path.write_text("".join(json.dumps({"time": 1.0, **row}) + "\n" for row in rows))
    return path


def _fit_rows(name: str, losses: list[float], every: int = 10) -> list[dict]:
    """What pdiff.training.fit.fit logs for one phase: loss, lr, step and throughput every `every`
    steps."""
    return [
        {
            f"{name}/loss": loss,
            f"{name}/lr": 1e-3,
            f"{name}/step": every * (i + 1),
            f"{name}/steps_per_s": 50.0,
            f"{name}/samples_per_s": 800.0,
        }
        for i, loss in enumerate(losses)
    ]


@pytest.fixture
def figures(monkeypatch) -> list:
    """The figures the report saves, kept for inspection (the PNG is still written)."""
    kept, save = [], report_plots._save

    def keep(fig, path):
        kept.append(fig)
        save(fig, path)

    monkeypatch.setattr(report_plots, "_save", keep)
    return kept


def test_a_flow_run_gets_one_panel_with_its_logged_curve(tmp_path, figures):
    losses = [0.9, 0.5, 0.31, 0.2, 0.12]
    rows = [
        {"collect/loss": 2.0, "collect/step": 1},
        *_fit_rows("flow", losses),
        {"eval/acc": 90.0},
    ]
    drawn = plot_training_curves(
        tmp_path / CURVES_PLOT, _metrics(tmp_path / "metrics.jsonl", rows), FLOW
    )
    assert list(drawn) == ["Flow matching (velocity)"]
    assert drawn["Flow matching (velocity)"] == ([10.0, 20.0, 30.0, 40.0, 50.0], losses)
    (axis,) = figures[0].axes
    assert axis.get_title() == "Flow matching (velocity)" and len(axis.lines) == 1
    assert (
        list(axis.lines[0].get_xdata()) == [10, 20, 30, 40, 50]
        and list(axis.lines[0].get_ydata()) == losses
    )
    assert (tmp_path / CURVES_PLOT).stat().st_size > 0


def test_a_latent_run_gets_its_two_phases_in_order(tmp_path, figures):
    rows = [*_fit_rows("ae", [1.0, 0.4, 0.2]), *_fit_rows("diffusion", [0.8, 0.6], every=5)]
    drawn = plot_training_curves(
        tmp_path / CURVES_PLOT, _metrics(tmp_path / "metrics.jsonl", rows), LATENT
    )
    assert list(drawn) == list(LATENT.values())
    assert drawn["Autoencoder (reconstruction)"] == ([10.0, 20.0, 30.0], [1.0, 0.4, 0.2])
    assert drawn["Latent DDPM (noise prediction)"] == ([5.0, 10.0], [0.8, 0.6])
    assert [axis.get_title() for axis in figures[0].axes] == list(LATENT.values())


def test_a_phase_without_rows_says_so(tmp_path, figures):
    rows = _fit_rows("diffusion", [0.8, 0.6])  # the flow design's prefix never logged
    drawn = plot_training_curves(
        tmp_path / CURVES_PLOT, _metrics(tmp_path / "metrics.jsonl", rows), FLOW
    )
    assert drawn == {"Flow matching (velocity)": ([], [])}
    (axis,) = figures[0].axes
    assert len(axis.lines) == 0 and any(NO_ROWS in text.get_text() for text in axis.texts)
    missing = plot_training_curves(tmp_path / "none.png", tmp_path / "absent.jsonl", LATENT)
    assert missing == {title: ([], []) for title in LATENT.values()}
    assert plot_training_curves(tmp_path / "no_phases.png", tmp_path / "metrics.jsonl", {}) == {}


def _row(acc: float, similarity: float, n: int = 10) -> dict:
    return {
        "n": n,
        "acc_mean": acc,
        "acc_best": acc + 1,
        "acc_min": acc - 1,
        "acc_std": 0.5,
        "nn_l2_mean": 3.0,
        "nn_l2_median": 3.0,
        "nn_cos_mean": 0.1,
        "max_iou_mean": similarity,
        "max_iou_std": 0.01,
        "pairwise_iou_within": 0.8,
        "iou_with_originals_mean": 0.7,
        "novel_fraction": 0.5,
        "acc_interval": [acc - 0.5, acc + 0.5],
    }


@pytest.fixture
def run_report(tmp_path):
    """A complete report of a run with evaluate.baselines.average_of=4, built by the functions the
    stage uses."""
    baselines = BaselinesConfig(average_of=4)
    points = point_baselines(baselines)
    table = {
        "originals_nn_l2_median": 2.0,
        "originals": _row(80.0, 0.9),
        "generated": _row(79.0, 0.85),
    }
    for prefix in FRONTIERS.values():
        table.update(
            {
                f"{prefix}{scale}": _row(80.0 - 10 * scale, 1.0 - scale)
                for scale in (0.05, 0.15, 0.3)
            }
        )
    table.update({name: _row(78.0, 0.8) for name in points})
    resampled = {
        name: torch.full((50,), row["acc_mean"], dtype=torch.float64)
        + torch.linspace(-0.2, 0.2, 50)
        for name, row in table.items()
        if isinstance(row, dict)
    }
    accuracies = {
        "originals": torch.linspace(79.0, 81.0, 12),
        "generated": torch.linspace(78.0, 80.0, 10),
    }
    report = build_report(
        "toy", 12, 30, accuracies["originals"], accuracies["generated"], {"train_ae": 1.0}
    )
    report["validation"] = {"original": {"mean": 80.0}, "generated": {"mean": 79.0}}
    correct = {
        "trained": torch.rand(12, 40, generator=torch.Generator().manual_seed(0)) < 0.8,
        "generated": torch.rand(10, 40, generator=torch.Generator().manual_seed(1)) < 0.8,
    }
    report["keep_best"] = keep_best(
        correct, {"trained": torch.arange(12.0), "generated": torch.arange(10.0)}, 100, 0, 0.95
    )
    report["cost"] = cost_per_model({"train_ae": 1.0, "generate": 0.5}, 3, 12, 10)
    report["memorization"], report["n_test"] = table, 40
    report["verdict"] = compute_verdict(table, resampled, points, 0.95)
    report["zoo_check"] = zoo_check(report, resampled, [0.05, 0.15, 0.3])
    per_model = {
        f"max_iou:{name}": torch.full((len(acc),), 0.9) for name, acc in accuracies.items()
    }
    return report, accuracies, per_model


def test_the_report_names_the_averages_by_average_of(run_report):
    report, _, _ = run_report
    markdown = render_one_task_markdown(
        report, verdict_sentences(report["verdict"], report["memorization"])
    )
    assert "`average4` (averages of 4 random originals)" in markdown
    assert "`selected_average4` (the average of the 4 best)" in markdown
    assert "| average4 | **" in markdown and "| selected_average4 | 10 |" in markdown
    assert "average16" not in markdown and "of 16" not in markdown and "16 best" not in markdown


def test_write_report_draws_the_phases_it_is_given(tmp_path, run_report, figures):
    report, accuracies, per_model = run_report
    _metrics(tmp_path / "metrics.jsonl", _fit_rows("flow", [0.5, 0.25]))
    vectors = {"originals": torch.randn(12, 6), "generated": torch.randn(10, 6)}
    write_report(tmp_path, report, accuracies, per_model, 40, vectors, ["a sentence."], phases=FLOW)
    curves = next(fig for fig in figures if fig.axes[0].get_title() == "Flow matching (velocity)")
    assert len(curves.axes) == 1 and list(curves.axes[0].lines[0].get_ydata()) == [0.5, 0.25]
    assert (
        json.loads((tmp_path / "report.json").read_text())["verdict"]["families"][-1]
        == "selected_average4"
    )
    assert not list(tmp_path.glob(".*.tmp"))  # every file was renamed into place
    with pytest.raises(TypeError, match="phases"):
        write_report(
            tmp_path, report, accuracies, per_model, 40, vectors, []
        )  # the design's phases are required


SCALES = [0.01, 0.1, 0.3]


def _zoo_and_test_set(
    generated_acc: float,
    generated_similarity: float,
    matched: float,
    test_samples: int = 20000,
    std: float = 0.3,
    iou: float | None = 0.85,
    correlated: bool = True,
) -> tuple[dict, dict]:
    """A report's inputs to zoo_check for one zoo and test set and the generated models given:
    (report, resampled). `correlated` noise models err where the originals err (a paired comparison
    resolves small margins)."""
    torch.manual_seed(0)
    easy = (
        torch.rand(test_samples) > 0.2
    )  # every model is right on these, unless its own flips say otherwise
    originals = easy ^ (torch.rand(12, test_samples) < 0.02)
    noise = {
        f"{prefix}{scale:g}": (originals[:4] if correlated else easy)
        ^ (torch.rand(4, test_samples) < scale / 10)
        for prefix in FRONTIERS.values()
        for scale in SCALES
    }
    torch.manual_seed(
        int(generated_acc * 100)
    )  # the generated models and the matched scale differ per design
    extra = {
        "generated": easy ^ (torch.rand(10, test_samples) < 0.03),
        f"noise_matched_{matched:.3g}": originals[:4]
        ^ (torch.rand(4, test_samples) < matched / 10),
    }
    resampled = bootstrap_accuracies({"originals": originals, **noise, **extra}, 1000, seed=0)
    table = {
        "originals": {**_row(80.0, 0.9), "pairwise_iou_within": iou},
        "generated": _row(generated_acc, generated_similarity),
    }
    table.update(
        {
            name: _row(float(resampled[name].mean()), 1.0 - float(name.split("_")[-1]))
            for name in [*noise, *extra]
            if name != "generated"
        }
    )
    report = {
        "original": {"std": std},
        "memorization": table,
        "verdict": compute_verdict(table, resampled, (), 0.95),
    }
    return report, resampled


def test_whether_a_zoo_discriminates_does_not_depend_on_the_generator():
    """The same zoo and test set, two designs (their own accuracy, similarity and matched noise
    scale): one answer, although the noise family's interval differs between them."""
    first, second = _zoo_and_test_set(80.5, 0.95, 0.05), _zoo_and_test_set(79.0, 0.75, 0.5)
    assert first[0]["verdict"]["noise"]["low"] != second[0]["verdict"]["noise"]["low"]
    assert zoo_check(*first, SCALES) == zoo_check(*second, SCALES)


def test_a_zoo_discriminates_only_with_a_spread_the_test_set_resolves_and_errors_that_differ():
    check = zoo_check(*_zoo_and_test_set(80.5, 0.95, 0.05), SCALES)
    assert check["discriminates"] and 0.0 < check["resolution"] < 0.3
    copies = zoo_check(*_zoo_and_test_set(80.5, 0.95, 0.05, std=0.0, iou=1.0), SCALES)
    assert not copies["discriminates"]  # one model copied K times (digits_cnn's zoo)
    small = zoo_check(
        *_zoo_and_test_set(80.5, 0.95, 0.05, test_samples=1000, correlated=False), SCALES
    )
    assert (
        not small["discriminates"] and small["resolution"] > 0.3
    )  # a small test set: the spread is unresolved
    same = zoo_check(*_zoo_and_test_set(80.5, 0.95, 0.05, std=0.5, iou=0.995), SCALES)
    assert not same["discriminates"]  # spread, but every original errs alike


def test_a_report_of_a_zoo_that_cannot_discriminate_opens_with_why_and_names_the_knobs(run_report):
    report, _, _ = run_report
    report["zoo_check"] = {
        "accuracy_std": 0.0,
        "error_iou": 1.0,
        "resolution": 0.0,
        "discriminates": False,
    }
    first_lines = render_one_task_markdown(report, []).splitlines()[:3]
    assert first_lines[2].startswith(
        "**This zoo cannot tell a generator from a copy.** Its originals' test "
        "accuracies spread by 0.000 points (std)"
    )
    assert "`task.collect.lr`" in first_lines[2] and "`task.collect.runs`" in first_lines[2]
    assert "ZOO CANNOT DISCRIMINATE" in summary_line("all", Path("run"), report, 1.0)
    report["zoo_check"]["discriminates"] = True
    assert "cannot tell" not in render_one_task_markdown(report, [])
    assert "| zoo discriminates |" in summary_line("all", Path("run"), report, 1.0)


def multirun_config(overrides: list[str]) -> DictConfig:
    """The config with its hydra node, as a Hydra callback receives it."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_a_bare_multirun_ends_with_the_runs_own_line(tmp_path, run_report, capsys):
    report = run_report[0]
    (tmp_path / "report.json").write_text(json.dumps(report))
    ReportIndex().on_multirun_end(
        multirun_config([f"paths.output_dir={tmp_path}", "cluster.mem_gb=1"])
    )
    (line,) = capsys.readouterr().out.splitlines()
    assert (
        line.startswith("pdiff: toy K=12 D=30 | original best/mean/min")
        and "| verdict, margin" in line
    )
    assert line.endswith(f"s | {tmp_path / 'report.md'}")
    ReportIndex().on_multirun_end(multirun_config([f"paths.output_dir={tmp_path}", "stage=train"]))
    assert capsys.readouterr().out.startswith("pdiff: stage=train done in ")
    ReportIndex().on_multirun_end(multirun_config([f"paths.output_dir={tmp_path}", "seed=1"]))
    assert capsys.readouterr().out.splitlines() == [
        f"pdiff: 0 reports under {tmp_path}"
    ]  # its point: DIR/seed=1
