"""pdiff's large-D design (generator=token): a model code, a token autoencoder, a generator of model
codes and a DDPM on windows of token latents.

    zoo [K, D] (memory map) --normalised--> z --top-m PCA, whitened--> model codes c [K, m]
    z - decode(c) --tokens of S values--> [K, T, S] --shared token encoder--> latents [K, T, C]
        --cut into windows of W tokens--> [K * T/W, W, C]
    generation: c ~ code flow conditioned on accuracy (denoiser.code.model=flow; or the code DDPM);
        every window of the model ~ window DDPM told c and its tokens' places
        --token decoder--> residual [D]; decode(c) + residual --denormalised--> [N, D]

The code ties the windows of one network together: they are sampled given the same c, which also
carries the network's global shape (the zoo's principal directions), while the tokens carry what it
leaves out. Training reads random (model, token) rows from the memory-mapped zoo and the basis is
fitted column block by column block, so no step loads the zoo; the window denoiser sees one window
at a time.

    schemas.py   its config schemas (ae=token, denoiser=window)
    layout.py    parameter tokens: where each token of a vector lives; read from a [K, D] source
    windows.py   tokens grouped in windows: each slot's place, and the windows as training rows
    training.py  its networks built from the config, their losses, the token autoencoder's training
    sampling.py  model codes first, then every window of every model given its code
    design.py    TokenGenerator, the Generator that generator=token selects
"""

from pdiff.generators.token import design  # noqa: F401  (registers generator=token)
