"""A PCA basis of a zoo's normalised vectors, fitted in column blocks so that a memory-mapped zoo is
never loaded.

With K models and D >> K, the K x K Gram matrix of the centred rows gives the principal directions
(components = U^T Z / singular values); it is summed one block of columns at a time, and the
components are written block by block, so the memory that grows with D is the basis itself: k + 1
vectors of D values.
"""

from __future__ import annotations

import torch
from torch import nn

from pdiff.zoo.params import ParamNormalizer

BLOCK = 1 << 18  # columns read at a time


class PCABasis(nn.Module):
    """x = (z - mean) @ components.T / scale (whitened top-k coefficients) and back; identity when k
    = 0."""

    def __init__(self, dim: int, k: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(k, dim))
        self.register_buffer("scale", torch.ones(k))

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, rows: torch.Tensor, k: int, normalizer: ParamNormalizer | None = None) -> PCABasis:
        """The top min(k, K - 1, D) principal directions of rows [K, D] (normalised by `normalizer`
        when given; a memory map is read BLOCK columns at a time). k = 0: none."""
        count, dim = rows.shape
        k = min(k, count - 1, dim)
        basis = cls(dim, max(k, 0))
        if k <= 0:
            return basis
        blocks = [slice(start, min(start + BLOCK, dim)) for start in range(0, dim, BLOCK)]

        def centred(block: slice) -> torch.Tensor:
            z = rows[:, block].double()
            if normalizer is not None:
                z = (z - normalizer.mean[block].double()) / normalizer.std[block].double()
            basis.mean[block] = z.mean(0).float()
            return z - z.mean(0)

        gram = torch.zeros(count, count, dtype=torch.float64)
        for block in blocks:
            z = centred(block)
            gram += z @ z.T
        eigenvalues, eigenvectors = torch.linalg.eigh(gram)
        order = eigenvalues.argsort(descending=True)[:k]
        singular = eigenvalues[order].clamp_min(0).sqrt().clamp_min(1e-12)
        projection = eigenvectors[:, order] / singular  # [K, k]: components = projection.T @ z
        for block in blocks:
            basis.components[:, block] = (projection.T @ centred(block)).float()
        basis.scale.copy_((singular / (count - 1) ** 0.5).clamp_min(1e-8))
        return basis

    def encode_rows(self, rows: torch.Tensor, normalizer: ParamNormalizer) -> torch.Tensor:
        """encode(normalizer.normalize(rows)) [K, k] for rows [K, D] (a memory map), BLOCK columns
        at a time."""
        codes = torch.zeros(len(rows), self.k, dtype=torch.float64)
        for start in range(0, rows.shape[1], BLOCK):
            block = slice(start, start + BLOCK)
            z = (rows[:, block].double() - normalizer.mean[block].double()) / normalizer.std[
                block
            ].double()
            codes += (z - self.mean[block].double()) @ self.components[:, block].double().T
        return (codes / self.scale.double()).float()

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.k == 0 else (z - self.mean) @ self.components.T / self.scale

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.k == 0 else self.mean + (x * self.scale) @ self.components

    def decode_columns(self, x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """decode(x)[i, columns[i]] for coefficients x [B, k] and flat columns [B, S], without the
        [B, D] vectors."""
        return self.mean[columns] + torch.einsum(
            "bk,kbs->bs", x * self.scale, self.components[:, columns]
        )
