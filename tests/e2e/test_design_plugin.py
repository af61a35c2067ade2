"""A new design is one module plus one YAML: a toy design defined here runs the whole pipeline and
plots its curves."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

import pdiff.evaluation.report
from pdiff import atomic
from pdiff.config import CadenceConfig, GeneratorConfig, OptimConfig
from pdiff.config.command_line import whole_node_overrides
from pdiff.entry import register_configs
from pdiff.generators.interface import Generator, check_training
from pdiff.generators.registry import DESIGNS, register
from pdiff.pipeline.run import run_pipeline
from pdiff.seeds import Purpose, generator_for
from pdiff.training.fit import fit

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TOY_CONFIGS = Path(__file__).resolve().parent / "toy_configs"
TITLE = "Toy Gaussian (negative log-likelihood)"


@dataclass
class ToyGeneratorConfig(GeneratorConfig):
    design: str = "toy"
    optim: OptimConfig = field(default_factory=OptimConfig)
    cadence: CadenceConfig = field(default_factory=CadenceConfig)


class DiagonalGaussian(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim))
        self.log_std = nn.Parameter(torch.zeros(dim))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return (((rows - self.mean) / self.log_std.exp()) ** 2 / 2 + self.log_std).mean()


def gaussian_nll(model, rows: torch.Tensor, noise) -> torch.Tensor:
    return model(rows)


@register
@dataclass
class ToyGenerator(Generator):
    design = "toy"
    uses = {}
    reads = ()
    phases = {"toy": TITLE}
    schemas = {"generator": {"toy_schema": ToyGeneratorConfig}}

    gaussian: DiagonalGaussian

    @classmethod
    def check_config(cls, cfg) -> None:
        check_training(cfg.generator, "generator")

    @classmethod
    def train(cls, zoo, cfg, directory, tracker, timer, device) -> ToyGenerator:
        fitted = fit(
            DiagonalGaussian(zoo.spec.dim),
            gaussian_nll,
            zoo.vectors.float(),
            cfg.generator.optim,
            cfg.generator.cadence,
            cfg.trainer,
            name="toy",
            knob="generator.optim",
            seed=cfg.seed,
            checkpoint_dir=directory / "toy_checkpoint",
            tracker=tracker,
            device=device,
        )
        gaussian = DiagonalGaussian(zoo.spec.dim)
        gaussian.load_state_dict(fitted.weights)
        timer("train_toy")
        return cls(gaussian.eval())

    @classmethod
    def load(cls, directory, spec, cfg, device) -> ToyGenerator:
        gaussian = DiagonalGaussian(spec.dim)
        gaussian.load_state_dict(atomic.read_safetensors(Path(directory) / "gaussian.safetensors"))
        return cls(gaussian.eval())

    @torch.no_grad()
    def sample(self, n, sampler_cfg, seed, conditioning=None) -> torch.Tensor:
        noise = torch.randn(
            n, self.gaussian.mean.numel(), generator=generator_for(seed, Purpose.sampling)
        )
        return self.gaussian.mean + noise * self.gaussian.log_std.exp()

    def networks(self) -> dict[str, nn.Module]:
        return {"gaussian": self.gaussian}

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"gaussian.safetensors": self.gaussian.state_dict()}

    @property
    def meta(self) -> dict:
        return {}


register_configs()  # stores the toy's schema, as an entry point does for the designs it imported


def compose_toy(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(
            config_name="config",
            overrides=whole_node_overrides(
                [f"hydra.searchpath=[file://{TOY_CONFIGS}]", *overrides]
            ),
        )


@pytest.mark.slow
def test_a_design_from_a_test_module_runs_end_to_end_with_its_own_curves(tmp_path, monkeypatch):
    assert "toy" in DESIGNS
    drawn = {}
    real_plot = pdiff.evaluation.report.plot_training_curves

    def spy(path, metrics_file, phases):
        drawn.update(real_plot(path, metrics_file, phases))
        return drawn

    monkeypatch.setattr(pdiff.evaluation.report, "plot_training_curves", spy)
    out = tmp_path / "run"
    report = run_pipeline(
        compose_toy(
            [
                "experiment=smoke",
                "task=digits_cnn",
                "generator=toy",
                "threads=1",
                f"paths.output_dir={out}",
            ]
        )
    )

    assert report["generated"]["n"] == 20 and 0.0 <= report["generated"]["mean"] <= 100.0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [(row["toy/step"], row["toy/loss"]) for row in rows if "toy/loss" in row]
    assert [step for step, _ in logged] == [10, 20, 30, 40]
    assert list(drawn) == [TITLE]
    assert drawn[TITLE] == ([float(s) for s, _ in logged], [float(v) for _, v in logged])
    assert (
        json.loads((out / "generator" / "inputs.json").read_text())["generator"]["design"] == "toy"
    )
    assert sorted(json.loads((out / "generator" / "checksums.json").read_text())) == [
        "gaussian.safetensors"
    ]
