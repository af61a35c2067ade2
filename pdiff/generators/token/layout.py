"""Parameter tokens: each tensor of a flat vector cut into fixed-size pieces that know their tensor
and place.

A tensor of n values gives ceil(n / S) tokens of S values; the last one is zero-padded, so no token
spans two tensors. Tokens are read straight from a [K, D] source (a tensor, or the zoo's memory
map), so the whole zoo never has to be in memory, and written back into [D] vectors the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pdiff.generators.pca import PCABasis
from pdiff.zoo.params import ParamNormalizer, ParamSpec


@dataclass
class TokenBatch:
    """Token values [B, S] with the index of their tensor and their place in it (both [B], int64)."""

    values: torch.Tensor
    tensor_ids: torch.Tensor
    positions: torch.Tensor

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class ZooCodes:
    """The model code of every zoo model [K, m] and the basis that decodes it; tokens carry what it
    leaves out."""

    basis: PCABasis
    codes: torch.Tensor

    def baseline(self, models: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """The normalised values [B, S] that the codes of `models` [B] decode to at `columns` [B,
        S]."""
        return self.basis.decode_columns(self.codes[models], columns)


class TokenLayout:
    """Where each token of a ParamSpec lives: tensor index, position within the tensor, flat start,
    length."""

    def __init__(self, spec: ParamSpec, token_size: int):
        self.spec, self.token_size = spec, token_size
        counts = [math.ceil(entry.numel / token_size) for entry in spec.entries]
        self.tensor_ids = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        self.positions = torch.cat([torch.arange(count) for count in counts])
        offsets = torch.tensor([entry.offset for entry in spec.entries])
        numels = torch.tensor([entry.numel for entry in spec.entries])
        self.starts = offsets[self.tensor_ids] + self.positions * token_size
        self.lengths = torch.minimum(
            numels[self.tensor_ids] - self.positions * token_size, torch.tensor(token_size)
        )

    @property
    def count(self) -> int:
        return len(self.tensor_ids)

    @property
    def num_tensors(self) -> int:
        return len(self.spec.entries)

    def columns(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat columns [B, S] of the given token indices (clamped in padding) and the mask of real
        values."""
        offsets = torch.arange(self.token_size)
        valid = offsets[None] < self.lengths[tokens][:, None]
        columns = torch.where(
            valid, self.starts[tokens][:, None] + offsets[None], self.starts[tokens][:, None]
        )
        return columns, valid

    def gather(
        self,
        source: torch.Tensor,
        models: torch.Tensor,
        tokens: torch.Tensor,
        normalizer: ParamNormalizer | None = None,
        codes: ZooCodes | None = None,
    ) -> TokenBatch:
        """Tokens (models[i], tokens[i]) of a [K, D] tensor (mapped or not), optionally normalised,
        less what the models' codes decode to there when `codes` are given; padding is 0."""
        columns, valid = self.columns(tokens)
        values = source[models[:, None], columns].float()
        if normalizer is not None:
            values = (values - normalizer.mean[columns]) / normalizer.std[columns]
        if codes is not None:
            values = values - codes.baseline(models, columns)
        return TokenBatch(values * valid, self.tensor_ids[tokens], self.positions[tokens])

    def scatter(
        self,
        values: torch.Tensor,
        tokens: torch.Tensor,
        out: torch.Tensor,
        normalizer: ParamNormalizer | None = None,
    ) -> None:
        """Write token values [B, S] (token indices [B]) into the flat vector `out` [D],
        denormalised; no padding.

        `values`, `out` and the normaliser are on one device; the layout's indices are moved to it.
        """
        columns, valid = (index.to(out.device) for index in self.columns(tokens))
        if normalizer is not None:
            values = values * normalizer.std[columns] + normalizer.mean[columns]
        out[columns[valid]] = values[valid].to(out.dtype)


class ZooTokens:
    """All K x T tokens of a zoo as training rows (row r = model r // T, token r % T), read on
    demand; with `codes`, what each model's code leaves out."""

    def __init__(
        self,
        source: torch.Tensor,
        layout: TokenLayout,
        normalizer: ParamNormalizer,
        codes: ZooCodes | None = None,
    ):
        self.source, self.layout, self.normalizer, self.codes = source, layout, normalizer, codes

    def __len__(self) -> int:
        return len(self.source) * self.layout.count

    def take(self, rows: torch.Tensor, dtype: torch.dtype, device: torch.device) -> TokenBatch:
        """Rows gathered from the (CPU, memory-mapped) zoo, then moved to `device`."""
        batch = self.layout.gather(
            self.source,
            rows // self.layout.count,
            rows % self.layout.count,
            self.normalizer,
            self.codes,
        )
        return TokenBatch(
            batch.values.to(device=device, dtype=dtype),
            batch.tensor_ids.to(device),
            batch.positions.to(device),
        )
