"""Parameter generators: one interface (generators.interface.Generator) and a registry of designs.

    latent  p-diff: a parameter autoencoder (ae=mlp|pdiff_v1|pdiff_v2) + a DDPM on its latents
    token   pdiff's large-D design: a shared token autoencoder + a DDPM on windows of token latents
    flow    weight-space flow matching (optionally on a PCA basis, optionally accuracy-conditioned)

A new design is one module (or package: token/) that subclasses Generator and registers itself
(imported below, or by the code that runs it), plus configs/generator/NAME.yaml; it declares the
groups it reads, its phases and its schemas.
"""

from pdiff.generators import flow, latent, token  # noqa: F401  (each registers its design)
from pdiff.generators.interface import Generator, generator_exists
from pdiff.generators.registry import DESIGNS, design_class

__all__ = ["DESIGNS", "Generator", "design_class", "generator_exists"]
