"""The token design's config schemas: the token autoencoder (ae=token) and the window and
model-code denoisers (denoiser=window)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pdiff.config import CadenceConfig, Normalization, OptimConfig
from pdiff.generators.autoencoder_ddpm import AutoencoderConfig


@dataclass
class TokenAutoencoderConfig(AutoencoderConfig):
    name: str = "token"
    normalization: Normalization = Normalization.per_tensor
    token_size: int = 64
    token_latent_dim: int = 8  # latent values per token
    code_components: int = (
        32  # m: the model code, top-m whitened PCA coefficients (0: windows independent)
    )
    embed_dim: int = 64
    hidden: list[int] = field(default_factory=lambda: [256, 256])


class CodeModel(Enum):
    ddpm = "ddpm"  # a DDPM on the codes, unconditioned (ancestral sampling)
    flow = "flow"  # a flow on the codes conditioned on accuracy (classifier-free guidance)


@dataclass
class CodeDenoiserConfig:
    """The model codes' generator: a residual MLP, with its own budget (one step is one small MLP
    call on codes); a DDPM, or a flow conditioned on each checkpoint's validation accuracy, sampled
    toward generate.target_acc / target_quantile with generate.guidance (as generator=flow_pca)."""

    model: CodeModel = CodeModel.flow
    width: int = 256
    depth: int = 3
    condition_dropout: float = (
        0.1  # model=flow: fraction of training rows that see the null condition
    )
    temperature: float = 0.7  # model=flow: the starting noise's standard deviation
    steps: int = 50  # model=flow: Euler steps
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=5000, batch_size=256))
    cadence: CadenceConfig = field(default_factory=CadenceConfig)


@dataclass
class WindowDenoiserConfig:
    """The token design's denoiser: a pre-norm transformer over windows of token latents."""

    name: str = "window"
    window: int = 64  # token latents per window
    width: int = 128
    depth: int = 2
    heads: int = 4
    time_dim: int = 128
    code: CodeDenoiserConfig = field(default_factory=CodeDenoiserConfig)
    compile: bool = False  # torch.compile the denoiser for training (trainer=plain) and sampling
