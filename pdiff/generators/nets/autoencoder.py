"""Parameter autoencoders: p-diff v1 (conv, tiny latent), p-diff v2 (64-wide rows, 128-d latent),
and an MLP.

All take normalised vectors [B, D] and use latents shaped [B, C, L]. Given a BatchNoise (training)
they add noise to the input and to the latent (the augmentation p-diff depends on); without one they
are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pdiff.diffusion.noise import BatchNoise


class ParamAutoencoder(nn.Module):
    """Noise augmentation and the encode/decode interface; subclasses give `_encode` and `_decode`."""

    latent_shape: tuple[int, int]

    def __init__(self, dim: int, input_noise: float, latent_noise: float):
        super().__init__()
        self.dim, self.input_noise, self.latent_noise = dim, input_noise, latent_noise

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, C, L], deterministic."""
        return self._encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B, C, L] -> [B, D]."""
        return self._decode(z)

    def forward(self, x: torch.Tensor, noise: BatchNoise | None = None) -> torch.Tensor:
        """Reconstruction of x; with `noise` (training), noise is added to the input and to the
        latent."""
        if noise is not None and self.input_noise > 0:
            x = x + self.input_noise * noise.randn(self.dim).to(x)
        z = self._encode(x)
        if noise is not None and self.latent_noise > 0:
            z = z + self.latent_noise * noise.randn(*self.latent_shape).to(z)
        return self._decode(z)


def reconstruction_loss(
    forward: Callable[..., torch.Tensor], x: torch.Tensor, noise: BatchNoise
) -> torch.Tensor:
    """p-diff's autoencoder loss: MSE between x and the reconstruction of its noised version."""
    return F.mse_loss(forward(x, noise), x)


class MLPAutoencoder(ParamAutoencoder):
    """Linear-LayerNorm-SiLU stacks to `latent_dim` values, seen as [latent_channels, L], and back."""

    def __init__(
        self,
        dim: int,
        hidden: list[int],
        latent_dim: int,
        latent_channels: int,
        input_noise: float,
        latent_noise: float,
    ):
        super().__init__(dim, input_noise, latent_noise)
        self.latent_shape = (latent_channels, latent_dim // latent_channels)
        self.encoder = _mlp([dim, *hidden, latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden), dim])

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).view(-1, *self.latent_shape)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.flatten(1))


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(w_in, w_out))
        if index < len(widths) - 2:
            layers += [nn.LayerNorm(w_out), nn.SiLU()]
    return nn.Sequential(*layers)


def _down(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, 3, padding=1),
        nn.InstanceNorm1d(c_out, affine=True),
        nn.LeakyReLU(0.2),
        nn.Conv1d(c_out, c_out, stride, stride=stride),
        nn.InstanceNorm1d(c_out, affine=True),
        nn.LeakyReLU(0.2),
    )


def _up(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose1d(c_in, c_out, stride, stride=stride),
        nn.InstanceNorm1d(c_out, affine=True),
        nn.LeakyReLU(0.2),
        nn.Conv1d(c_out, c_out, 3, padding=1),
        nn.InstanceNorm1d(c_out, affine=True),
        nn.LeakyReLU(0.2),
    )


class ConvAutoencoderV1(ParamAutoencoder):
    """p-diff v1: 1-D convs over the zero-padded vector [B, 1, D'], strided down to a tiny latent
    [C, L]."""

    def __init__(
        self,
        dim: int,
        channels: list[int],
        latent_channels: int,
        stride: int,
        input_noise: float,
        latent_noise: float,
    ):
        super().__init__(dim, input_noise, latent_noise)
        factor = stride ** len(channels)
        self.padded = (
            math.ceil(dim / (2 * factor)) * 2 * factor
        )  # final length >= 2 so InstanceNorm is defined
        self.latent_shape = (latent_channels, self.padded // factor)
        widths = [1, *channels]
        self.encoder = nn.Sequential(
            *[_down(a, b, stride) for a, b in zip(widths[:-1], widths[1:])],
            nn.Conv1d(channels[-1], latent_channels, 1),
        )
        back = [*reversed(channels)]
        self.decoder = nn.Sequential(
            nn.Conv1d(latent_channels, back[0], 1),
            *[_up(a, b, stride) for a, b in zip(back, [*back[1:], back[-1]])],
            nn.Conv1d(back[-1], 1, 1),
        )

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(F.pad(x, (0, self.padded - self.dim)).unsqueeze(1))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).squeeze(1)[:, : self.dim]


class ConvAutoencoderV2(ParamAutoencoder):
    """p-diff v2: the vector as rows of `fold` values, stride-2 1-D convs over rows, a `latent_dim`
    latent."""

    def __init__(
        self,
        dim: int,
        fold: int,
        channels: list[int],
        latent_dim: int,
        input_noise: float,
        latent_noise: float,
    ):
        super().__init__(dim, input_noise, latent_noise)
        factor = 2 ** len(channels)
        self.fold = fold
        self.rows = math.ceil(dim / (fold * 2 * factor)) * 2 * factor  # final length >= 2, as in v1
        self.bottom = (channels[-1], self.rows // factor)
        self.latent_shape = (1, latent_dim)
        widths = [fold, *channels]
        self.encoder = nn.Sequential(
            *[_down(a, b, 2) for a, b in zip(widths[:-1], widths[1:])],
            nn.Flatten(),
            nn.Linear(channels[-1] * self.bottom[1], latent_dim),
        )
        back = [*reversed(channels)]
        self.expand = nn.Linear(latent_dim, channels[-1] * self.bottom[1])
        self.decoder = nn.Sequential(
            *[_up(a, b, 2) for a, b in zip(back, [*back[1:], back[-1]])],
            nn.Conv1d(back[-1], fold, 1),
        )

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        rows = (
            F.pad(x, (0, self.rows * self.fold - self.dim))
            .view(-1, self.rows, self.fold)
            .transpose(1, 2)
        )
        return self.encoder(rows).unsqueeze(1)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.expand(z.flatten(1)).view(-1, *self.bottom))
        return out.transpose(1, 2).reshape(len(z), -1)[:, : self.dim]
