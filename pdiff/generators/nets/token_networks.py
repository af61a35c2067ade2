"""pdiff's large-D design: one autoencoder shared by all parameter tokens, a denoiser over windows
of them told their model's code, and a denoiser of the model codes.

No network has a weight whose size depends on D: a token's tensor is a learned embedding (one row
per tensor) and its place in the tensor a sinusoidal code, so ResNet-18's 11M parameters cost the
same weights as the 15k of the digits CNN. Memory that grows with D is the token latents and the
code's basis.
"""

from __future__ import annotations

import torch
from torch import nn

from pdiff.diffusion.noise import BatchNoise
from pdiff.generators.nets.autoencoder import _mlp
from pdiff.generators.nets.denoiser import timestep_embedding
from pdiff.generators.nets.velocity import TIME_SCALE, VelocityMLP


class TokenPlace(nn.Module):
    """Embedding of (tensor index, position in the tensor): a learned row per tensor + a sinusoidal
    code."""

    def __init__(self, num_tensors: int, dim: int):
        super().__init__()
        self.dim = dim
        self.tensor = nn.Embedding(num_tensors + 1, dim)  # the last row marks window padding

    def forward(self, tensor_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        code = timestep_embedding(positions.reshape(-1), self.dim).view(*positions.shape, self.dim)
        return self.tensor(tensor_ids) + code.to(self.tensor.weight.dtype)


class TokenAutoencoder(nn.Module):
    """Token values [B, S] + place -> latent [B, latent_dim] -> values; input and latent noise when
    training."""

    def __init__(
        self,
        token_size: int,
        num_tensors: int,
        latent_dim: int,
        hidden: list[int],
        embed_dim: int,
        input_noise: float,
        latent_noise: float,
    ):
        super().__init__()
        self.token_size, self.latent_dim = token_size, latent_dim
        self.input_noise, self.latent_noise = input_noise, latent_noise
        self.place = TokenPlace(num_tensors, embed_dim)
        self.encoder = _mlp([token_size + embed_dim, *hidden, latent_dim])
        self.decoder = _mlp([latent_dim + embed_dim, *reversed(hidden), token_size])

    def encode(
        self, values: torch.Tensor, tensor_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        return self.encoder(torch.cat([values, self.place(tensor_ids, positions)], -1))

    def decode(
        self, latents: torch.Tensor, tensor_ids: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        return self.decoder(torch.cat([latents, self.place(tensor_ids, positions)], -1))

    def forward(
        self,
        values: torch.Tensor,
        tensor_ids: torch.Tensor,
        positions: torch.Tensor,
        noise: BatchNoise | None = None,
    ) -> torch.Tensor:
        if noise is not None and self.input_noise > 0:
            values = values + self.input_noise * noise.randn(self.token_size).to(values)
        latents = self.encode(values, tensor_ids, positions)
        if noise is not None and self.latent_noise > 0:
            latents = latents + self.latent_noise * noise.randn(self.latent_dim).to(latents)
        return self.decode(latents, tensor_ids, positions)


class WindowDenoiser(nn.Module):
    """Predicts eps for a window of token latents [B, W, C] at timesteps [B], given each token's
    place and, with code_dim > 0, the code [B, code_dim] of the model the window belongs to (added
    to every slot, as the time is)."""

    def __init__(
        self,
        latent_dim: int,
        num_tensors: int,
        width: int,
        depth: int,
        heads: int,
        time_dim: int,
        code_dim: int = 0,
    ):
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width)
        )
        self.code_mlp = (
            nn.Sequential(nn.Linear(code_dim, width), nn.SiLU(), nn.Linear(width, width))
            if code_dim
            else None
        )
        self.place = TokenPlace(num_tensors, width)
        self.stem = nn.Linear(latent_dim, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, latent_dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        tensor_ids: torch.Tensor,
        positions: torch.Tensor,
        code: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.time_dim).to(x_t.dtype))
        if self.code_mlp is not None:
            emb = emb + self.code_mlp(code.to(x_t.dtype))
        h = self.stem(x_t) + self.place(tensor_ids, positions) + emb[:, None]
        return self.out(self.blocks(h))


class CodeDenoiser(VelocityMLP):
    """Predicts eps for model codes [B, m] at DDPM timesteps [B] (integers in [0, T)): a residual
    MLP."""

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return super().forward(x_t, t.float() / TIME_SCALE)
