"""The run's report: report.json (fixed keys), report.md and a PNG of both accuracy distributions."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pdiff import atomic  # noqa: E402

ACCURACY_PLOT = "accuracy.png"


def summarize(accuracy: torch.Tensor) -> dict:
    """n, best, mean, median, min, std of accuracies in percent."""
    acc = accuracy.double()
    return {"n": int(acc.numel()), "best": round(float(acc.max()), 4), "mean": round(float(acc.mean()), 4),
            "median": round(float(acc.median()), 4), "min": round(float(acc.min()), 4),
            "std": round(float(acc.std()) if acc.numel() > 1 else 0.0, 4)}


def build_report(task: str, k: int, param_count: int, original: torch.Tensor, generated: torch.Tensor,
                 timings: dict[str, float]) -> dict:
    return {"task": task, "k": k, "param_count": param_count, "original": summarize(original),
            "generated": summarize(generated), "timings_s": {key: round(v, 3) for key, v in timings.items()}}


def plot_accuracies(path: Path, original: torch.Tensor, generated: torch.Tensor, n_test: int) -> None:
    """Histogram (one bin per test-set error count) and sorted accuracies of originals and generated models."""
    step = 100.0 / n_test
    low = float(torch.cat([original, generated]).min()) - step
    high = float(torch.cat([original, generated]).max()) + step
    bins = torch.arange(low - step / 2, high + step, step).tolist()
    fig, (hist, ranks) = plt.subplots(1, 2, figsize=(11, 4))
    for values, label, colour in ((original, "original (SGD)", "tab:blue"), (generated, "generated (p-diff)",
                                                                            "tab:orange")):
        hist.hist(values.tolist(), bins=bins, alpha=0.55, label=f"{label}, n={len(values)}", color=colour)
        ranks.plot(sorted(values.tolist(), reverse=True), label=label, color=colour)
    hist.set_xlabel("test accuracy (%)")
    hist.set_ylabel("models")
    hist.set_title(f"Accuracy distribution (one bin = one test image of {n_test})")
    hist.legend(loc="upper left")
    ranks.set_xlabel("model rank")
    ranks.set_ylabel("test accuracy (%)")
    ranks.set_title("Models sorted by accuracy")
    ranks.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def render_markdown(report: dict, plot_name: str) -> str:
    rows = ["| models | n | best | mean | median | min | std |", "|---|---|---|---|---|---|---|"]
    for key in ("original", "generated"):
        s = report[key]
        rows.append(f"| {key} | {s['n']} | {s['best']:.2f} | {s['mean']:.2f} | {s['median']:.2f} | {s['min']:.2f} "
                    f"| {s['std']:.3f} |")
    delta = {m: report["generated"][m] - report["original"][m] for m in ("best", "mean", "min")}
    timing_rows = "\n".join(f"| {stage} | {seconds:.1f} |" for stage, seconds in report["timings_s"].items())
    return (f"# pdiff report: {report['task']}\n\n"
            f"K = {report['k']} SGD checkpoints of {report['param_count']:,} parameters; test accuracy in percent.\n\n"
            + "\n".join(rows)
            + f"\n\nGenerated minus original: best {delta['best']:+.2f}, mean {delta['mean']:+.2f}, "
              f"min {delta['min']:+.2f} points.\n\n"
            f"![accuracy distributions]({plot_name})\n\n## Time per stage\n\n| stage | seconds |\n|---|---|\n"
            f"{timing_rows}\n")


def write_report(directory: Path, report: dict, original: torch.Tensor, generated: torch.Tensor, n_test: int) -> None:
    plot_accuracies(directory / ACCURACY_PLOT, original, generated, n_test)
    atomic.write_json(directory / "report.json", report)
    atomic.write_text(directory / "report.md", render_markdown(report, ACCURACY_PLOT))


class ReportIndex(Callback):
    """Hydra callback: after a multirun, print where each sweep point's report is, with its numbers."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        reports = sorted(sweep_dir.glob("*/report.json"))
        print(f"pdiff: {len(reports)} reports under {sweep_dir}")
        for path in reports:
            report = json.loads(path.read_text())
            print(f"  {path.parent / 'report.md'}: generated best/mean {report['generated']['best']:.2f}/"
                  f"{report['generated']['mean']:.2f}, original best/mean {report['original']['best']:.2f}/"
                  f"{report['original']['mean']:.2f}")
