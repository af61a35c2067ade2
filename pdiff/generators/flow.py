"""Weight-space flow matching (generator=flow): no autoencoder, a rectified flow on the weights
themselves.

    zoo [K, D] --normaliser--> [K, D] --(optional) top-k PCA coefficients, whitened--> x_1 [K, d]
        --flow matching (velocity MLP, EMA; optionally conditioned on each checkpoint's accuracy)-->
        Euler / Heun from N(0, I) --> [N, d] --back through the basis and the normaliser--> [N, D]

DeepWeightFlow (arXiv 2601.05052) flows on PCA coefficients of an aligned zoo; with
generator.condition=true the velocity sees the checkpoint's validation accuracy (normalised over the
zoo), dropped for generator.condition_dropout of the rows, so that sampling can aim at
generate.target_acc with classifier-free guidance (G.pt conditions on a target loss in the same
way).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pdiff import atomic
from pdiff.config import Normalization, SamplerName, require
from pdiff.diffusion.flow_matching import flow_matching_loss, sample_flow
from pdiff.diffusion.noise import BatchNoise
from pdiff.generators.flow_schemas import FlowGeneratorConfig, FlowSamplerConfig, VelocityConfig
from pdiff.generators.interface import (
    Conditioning,
    Generator,
    PhaseTimer,
    check_ema,
    check_training,
    read_meta,
    trained_pair,
)
from pdiff.generators.nets.velocity import VelocityMLP
from pdiff.generators.pca import PCABasis
from pdiff.generators.registry import register
from pdiff.heldout.ridge import TaskRidge, fit_task_ridge
from pdiff.seeds import Purpose, derive_seed, generator_for
from pdiff.tracking import Tracker, stage_progress
from pdiff.training.fit import fit
from pdiff.zoo.params import ParamNormalizer, ParamSpec
from pdiff.zoo.store import ParamZoo

BASIS_FILE = "basis.safetensors"
VELOCITY_WEIGHTS = "velocity_ema.safetensors"
VELOCITY_RAW_WEIGHTS = "velocity.safetensors"


def build_velocity(
    denoiser_cfg, dim: int, conditional: bool, condition_dim: int = 1
) -> VelocityMLP:
    return VelocityMLP(
        dim,
        denoiser_cfg.width,
        denoiser_cfg.depth,
        denoiser_cfg.time_dim,
        conditional,
        condition_dim,
    )


def conditioned_loss(dropout: float, condition_dim: int = 1):
    """Flow matching on rows [x_1 | condition]: the last `condition_dim` columns are the row's
    condition (its normalised accuracy, or its task's descriptor); each row sees it, or the null
    condition with probability `dropout` (drawn from the batch's noise, so ranks and resumes agree).
    """

    def loss(model, rows: torch.Tensor, noise: BatchNoise) -> torch.Tensor:
        kept = noise.rand() >= dropout
        condition = rows[:, -condition_dim:]
        return flow_matching_loss(
            model,
            rows[:, :-condition_dim],
            noise,
            {"condition": condition if condition_dim > 1 else condition[:, 0], "conditioned": kept},
        )

    return loss


def normalised_accuracy(val_accuracy: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
    """The checkpoints' accuracies as a flow's condition (z-scores over the zoo, float32) and the
    (mean, std) that made them."""
    accuracy = val_accuracy.double()
    stats = (float(accuracy.mean()), float(accuracy.std().clamp_min(1e-6)))
    return ((accuracy - stats[0]) / stats[1]).float(), stats


def normalised_target(
    conditioning: Conditioning | None, stats: tuple[float, float] | None
) -> float | None:
    """generate's target accuracy as a flow's condition (a z-score by the zoo's `stats`); None
    without a target or without stats."""
    if conditioning is None or conditioning.target_acc is None or stats is None:
        return None
    return (conditioning.target_acc - stats[0]) / stats[1]


def guided_velocity(velocity: VelocityMLP, condition: torch.Tensor, guidance: float):
    """v(x, t) toward each row's `condition` ([n], or [n, d]) with classifier-free guidance:
    v_null + guidance (v_condition - v_null); the conditional velocity alone at guidance 1."""
    keep = torch.ones(len(condition), dtype=torch.bool, device=condition.device)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_target = velocity(x, t, condition, keep)
        if guidance == 1.0:
            return v_target
        v_null = velocity(x, t, condition, ~keep)
        return v_null + guidance * (v_target - v_null)

    return guided


@register
@dataclass
class FlowGenerator(Generator):
    design = "flow"
    uses = {"denoiser": ("velocity",), "sampler": ("euler", "heun")}
    reads = ("denoiser",)  # and its own generator node: optim, cadence, ema_decay
    phases = {"flow": "Flow matching (velocity)"}
    schemas = {
        "generator": {"flow_schema": FlowGeneratorConfig},
        "denoiser": {"velocity_schema": VelocityConfig},
        "sampler": {"euler_schema": FlowSamplerConfig, "heun_schema": FlowSamplerConfig},
    }
    condition_setting = "generator.condition=true"

    normalizer: ParamNormalizer
    basis: PCABasis
    velocity: VelocityMLP  # the EMA weights: the ones that sample
    accuracy_stats: (
        tuple[float, float] | None
    )  # (mean, std) of the zoo's accuracies when conditioned on them
    raw_velocity: VelocityMLP | None = field(default=None)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    descriptor_dim: int = (
        0  # > 0: conditioned on each checkpoint's task descriptor (a zoo of many tasks)
    )
    # generator.descriptor_map: the ridge map (float32) the flow's rows are
    # residuals of
    descriptor_map: TaskRidge | None = None

    @classmethod
    def conditioned(cls, cfg) -> bool:
        return bool(cfg.generator.condition)

    @classmethod
    def check_config(cls, cfg) -> None:
        generator = cfg.generator
        require(
            generator.pca_components >= 0,
            "generator.pca_components",
            generator.pca_components,
            "must be >= 0 (0: no PCA)",
        )
        require(
            0.0 <= generator.condition_dropout < 1.0,
            "generator.condition_dropout",
            generator.condition_dropout,
            "must be in [0, 1)",
        )
        check_training(generator, "generator")
        check_ema(generator.ema_decay, "generator.ema_decay")

    @classmethod
    def train(
        cls,
        zoo: ParamZoo,
        cfg,
        directory: Path,
        tracker: Tracker,
        timer: PhaseTimer,
        device: torch.device,
    ) -> FlowGenerator:
        generator_cfg = cfg.generator
        normalizer = ParamNormalizer.fit(
            zoo.spec, zoo.vectors, Normalization(generator_cfg.normalization)
        )
        basis = PCABasis.fit(zoo.vectors, generator_cfg.pca_components, normalizer)
        x1 = basis.encode(normalizer.normalize(zoo.vectors.float())).float()
        stats, rows, descriptor_dim, descriptor_map = None, x1, 0, None
        if (
            generator_cfg.condition and zoo.tasks is not None
        ):  # many tasks: the condition is the task
            descriptor_dim = int(zoo.tasks.descriptor.shape[1])
            descriptors = zoo.tasks.descriptor.float()
            if generator_cfg.descriptor_map:
                fitted = fit_task_ridge(descriptors, x1)
                descriptor_map = TaskRidge(fitted.weight.float(), fitted.bias.float(), fitted.alpha)
                x1 = x1 - descriptor_map(descriptors)
            rows = torch.cat([x1, descriptors], 1)
        elif generator_cfg.condition:
            accuracy, stats = normalised_accuracy(zoo.val_accuracy)
            rows = torch.cat([x1, accuracy[:, None]], 1)
        seed = derive_seed(cfg.seed, Purpose.denoiser)
        torch.manual_seed(seed)
        conditional, condition_dim = bool(generator_cfg.condition), max(descriptor_dim, 1)
        loss = (
            conditioned_loss(generator_cfg.condition_dropout, condition_dim)
            if conditional
            else flow_matching_loss
        )
        build = lambda: build_velocity(cfg.denoiser, x1.shape[1], conditional, condition_dim)  # noqa: E731
        fitted = fit(
            build(),
            loss,
            rows,
            generator_cfg.optim,
            generator_cfg.cadence,
            cfg.trainer,
            name="flow",
            seed=seed,
            checkpoint_dir=directory / "flow_checkpoint",
            tracker=tracker,
            ema_decay=generator_cfg.ema_decay,
            device=device,
            compile_forward=cfg.denoiser.compile,
            knob="generator.optim",
        )
        raw, ema = trained_pair(build, fitted)
        timer("train_flow")
        return cls(
            normalizer,
            basis,
            ema,
            stats,
            raw,
            descriptor_dim=descriptor_dim,
            descriptor_map=descriptor_map,
        )

    @classmethod
    def load(cls, directory: Path, spec: ParamSpec, cfg, device: torch.device) -> FlowGenerator:
        meta = read_meta(directory)
        state = atomic.read_safetensors(Path(directory) / BASIS_FILE)
        normalizer, basis = (
            ParamNormalizer(spec.dim),
            PCABasis(spec.dim, int(meta["pca_components"])),
        )
        for prefix, module in (("normalizer.", normalizer), ("basis.", basis)):
            module.load_state_dict(
                {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            )
        descriptor_map = (
            TaskRidge(
                state["map.weight"].to(device),
                state["map.bias"].to(device),
                meta["descriptor_map_alpha"],
            )
            if "map.weight" in state
            else None
        )
        stats = tuple(meta["accuracy_stats"]) if meta["accuracy_stats"] else None
        descriptor_dim = int(meta.get("descriptor_dim", 0))
        velocity = build_velocity(
            cfg.denoiser,
            int(meta["flow_dim"]),
            stats is not None or descriptor_dim > 0,
            max(descriptor_dim, 1),
        )
        velocity.load_state_dict(atomic.read_safetensors(Path(directory) / VELOCITY_WEIGHTS))
        return cls(
            normalizer.to(device),
            basis.to(device),
            velocity.to(device).eval(),
            stats,
            device=device,
            descriptor_dim=descriptor_dim,
            descriptor_map=descriptor_map,
        )

    @torch.no_grad()
    def sample(
        self, n: int, sampler_cfg, seed: int, conditioning: Conditioning | None = None
    ) -> torch.Tensor:
        """n vectors [n, D], integrated as one batch; with `conditioning`, guided toward its target
        accuracy (or each row toward its task descriptor)."""
        dim = self.basis.k or self.normalizer.mean.numel()
        velocity = self._guided(n, conditioning)
        name = SamplerName(sampler_cfg.name).value
        with stage_progress(f"sample {n} models ({name})", total=sampler_cfg.steps) as bar:
            x = sample_flow(
                velocity,
                (n, dim),
                sampler_cfg,
                generator_for(seed, Purpose.sampling),
                self.device,
                progress=bar.advance,
            )
        if (
            self.descriptor_map is not None
            and conditioning
            and conditioning.descriptors is not None
        ):
            x = x + self.descriptor_map(conditioning.descriptors)
        return self.normalizer.denormalize(self.basis.decode(x)).cpu()

    def _guided(self, n: int, conditioning: Conditioning | None):
        """v(x, t): unconditional, or v_null + w (v_target - v_null) toward the normalised target
        accuracy, or toward each row's task descriptor."""
        if (
            conditioning is not None
            and conditioning.descriptors is not None
            and self.descriptor_dim
        ):
            condition = conditioning.descriptors.to(self.device, torch.float32).view(
                n, self.descriptor_dim
            )
        elif (target := normalised_target(conditioning, self.accuracy_stats)) is not None:
            condition = torch.full((n,), target, device=self.device)
        else:
            return lambda x, t: self.velocity(x, t)
        return guided_velocity(self.velocity, condition, conditioning.guidance)

    def networks(self) -> dict[str, nn.Module]:
        return {"velocity": self.velocity}

    def files(self) -> dict[str, dict[str, torch.Tensor]]:
        basis = {f"normalizer.{k}": v for k, v in self.normalizer.state_dict().items()}
        basis.update({f"basis.{k}": v for k, v in self.basis.state_dict().items()})
        if self.descriptor_map is not None:
            basis.update(
                {"map.weight": self.descriptor_map.weight, "map.bias": self.descriptor_map.bias}
            )
        files = {BASIS_FILE: basis, VELOCITY_WEIGHTS: self.velocity.state_dict()}
        if self.raw_velocity is not None:
            files[VELOCITY_RAW_WEIGHTS] = self.raw_velocity.state_dict()
        return files

    @property
    def meta(self) -> dict:
        return {
            "pca_components": self.basis.k,
            "flow_dim": self.basis.k or int(self.normalizer.mean.numel()),
            "accuracy_stats": list(self.accuracy_stats) if self.accuracy_stats else None,
            "descriptor_dim": self.descriptor_dim,
            "descriptor_map_alpha": self.descriptor_map.alpha if self.descriptor_map else None,
        }
