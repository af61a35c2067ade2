"""Training the token design: its networks built from the config, their losses, the shared token
autoencoder's fit, and the zoo's tokens encoded to latents."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pdiff.diffusion.gaussian import GaussianDiffusion
from pdiff.diffusion.noise import BatchNoise
from pdiff.generators.nets.token_networks import CodeDenoiser, TokenAutoencoder, WindowDenoiser
from pdiff.generators.nets.velocity import VelocityMLP
from pdiff.generators.token.layout import TokenBatch, TokenLayout, ZooCodes, ZooTokens
from pdiff.generators.token.schemas import CodeModel
from pdiff.generators.token.windows import WindowBatch
from pdiff.tracking import Tracker
from pdiff.training.fit import fit
from pdiff.zoo.params import ParamNormalizer
from pdiff.zoo.store import ParamZoo

ENCODE_CHUNK = 8192  # tokens per encoder/decoder call


def build_token_autoencoder(ae_cfg, layout: TokenLayout) -> TokenAutoencoder:
    return TokenAutoencoder(
        ae_cfg.token_size,
        layout.num_tensors,
        ae_cfg.token_latent_dim,
        list(ae_cfg.hidden),
        ae_cfg.embed_dim,
        ae_cfg.input_noise,
        ae_cfg.latent_noise,
    )


def build_window_denoiser(
    denoiser_cfg, latent_dim: int, layout: TokenLayout, code_dim: int
) -> WindowDenoiser:
    return WindowDenoiser(
        latent_dim,
        layout.num_tensors,
        denoiser_cfg.width,
        denoiser_cfg.depth,
        denoiser_cfg.heads,
        denoiser_cfg.time_dim,
        code_dim,
    )


def build_code_denoiser(denoiser_cfg, code_dim: int) -> CodeDenoiser | VelocityMLP:
    """The model codes' DDPM denoiser, or with denoiser.code.model=flow their accuracy-conditioned
    velocity."""
    code = denoiser_cfg.code
    if CodeModel(code.model) is CodeModel.flow:
        return VelocityMLP(
            code_dim, code.width, code.depth, denoiser_cfg.time_dim, conditional=True
        )
    return CodeDenoiser(code_dim, code.width, code.depth, denoiser_cfg.time_dim)


def token_reconstruction_loss(forward, batch: TokenBatch, noise: BatchNoise) -> torch.Tensor:
    """p-diff's autoencoder loss on tokens: MSE between a token and the reconstruction of its noised
    version."""
    return F.mse_loss(forward(batch.values, batch.tensor_ids, batch.positions, noise), batch.values)


def window_diffusion_loss(diffusion: GaussianDiffusion):
    def loss(forward, batch: WindowBatch, noise: BatchNoise) -> torch.Tensor:
        return diffusion.training_losses(forward, batch.latents, noise, batch.conditioning())

    return loss


def code_diffusion_loss(diffusion: GaussianDiffusion):
    def loss(forward, codes: torch.Tensor, noise: BatchNoise) -> torch.Tensor:
        return diffusion.training_losses(forward, codes, noise)

    return loss


def train_token_autoencoder(
    zoo: ParamZoo,
    normalizer: ParamNormalizer,
    codes: ZooCodes | None,
    ae_cfg,
    trainer_cfg,
    seed: int,
    directory: Path,
    tracker: Tracker,
    device: torch.device,
) -> tuple[TokenLayout, TokenAutoencoder]:
    """The shared token autoencoder on random tokens of the normalised zoo (less what the codes
    decode to)."""
    layout = TokenLayout(zoo.spec, ae_cfg.token_size)
    torch.manual_seed(seed)
    fitted = fit(
        build_token_autoencoder(ae_cfg, layout),
        token_reconstruction_loss,
        ZooTokens(zoo.vectors, layout, normalizer, codes),
        ae_cfg.optim,
        ae_cfg.cadence,
        trainer_cfg,
        name="ae",
        seed=seed,
        checkpoint_dir=directory / "ae_checkpoint",
        tracker=tracker,
        device=device,
    )
    autoencoder = build_token_autoencoder(ae_cfg, layout)
    autoencoder.load_state_dict(fitted.weights)
    return layout, autoencoder.eval()


@torch.no_grad()
def encode_token_latents(
    vectors: torch.Tensor,
    normalizer: ParamNormalizer,
    layout: TokenLayout,
    autoencoder: TokenAutoencoder,
    device: torch.device,
    codes: ZooCodes | None = None,
) -> tuple[torch.Tensor, float, float]:
    """Latents [K, T, C] (CPU) of every zoo token (less what its model's code decodes to) scaled to
    unit std, the scale, and the normalised reconstruction MSE; the tokens are read from the CPU zoo
    and encoded on `device`."""
    autoencoder.to(device)
    latents = torch.empty(len(vectors), layout.count, autoencoder.latent_dim)
    squared_error, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for model in range(len(vectors)):
        for tokens in torch.arange(layout.count).split(ENCODE_CHUNK):
            batch = layout.gather(
                vectors, torch.full_like(tokens, model), tokens, normalizer, codes
            )
            values, ids, positions = (
                batch.values.to(device),
                batch.tensor_ids.to(device),
                batch.positions.to(device),
            )
            encoded = autoencoder.encode(values, ids, positions)
            latents[model, tokens] = encoded.cpu()
            recon = autoencoder.decode(encoded, ids, positions)
            _, valid = layout.columns(tokens)
            squared_error += ((recon - values)[valid.to(device)] ** 2).sum().double()
            count += int(valid.sum())
    squared_error = float(squared_error)
    scale = float(latents.std().clamp_min(1e-8))
    return latents / scale, scale, squared_error / max(count, 1)
