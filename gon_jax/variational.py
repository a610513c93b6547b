"""Variational GON (docs/METHODS.md 2.5, original GON code `Variational-GON.py`).

The gradient-origin latent z goes through two Dense(nz -> nz) heads giving mu and logvar;
training samples z' = mu + eps * exp(logvar / 2) (eps from the 'reparam' rng), eval uses
z' = mu; a ConvDecoder (sigmoid output) decodes z'. ReLU between the decoder stages, as in
the original code (REFERENCE 2.5 names no activation; the ELU of 2.2/2.3 belongs to the
anomaly notebooks' decoders).
PyTorch import: mu_head = fc21, logvar_head = fc22 (kernel = weight.T), decoder = main.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.torch_layers import torch_bias_init, torch_kernel_init
from gon_jax.layers import ConvDecoder, Stage, vae32_stages

Array = jax.Array

REPARAM_RNG = "reparam"


class VariationalGON(nn.Module):
    """z (B, nz) -> (recon (B, H, W, C) in (0, 1), mu (B, nz), logvar (B, nz)).

    train=True draws eps ~ N(0, I) from the 'reparam' rng (apply(..., rngs={'reparam': key}))
    and uses batch statistics in the decoder's BatchNorm; sample_latent (default: = train)
    decouples the two (scoring uses batch statistics with z' = mu).
    """

    nz: int
    stages: tuple[Stage, ...]
    activation: str = "relu"
    out_activation: str = "sigmoid"
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    def __post_init__(self) -> None:
        if not isinstance(self.nz, int) or self.nz < 1:
            raise ValueError(f"config.model.nz must be a positive int, got {self.nz!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Array, *, train: bool = False,
                 sample_latent: bool | None = None) -> tuple[Array, Array, Array]:
        if z.ndim != 2 or z.shape[-1] != self.nz:
            raise ValueError(f"VariationalGON expects z of shape (B, {self.nz}), got {z.shape}")

        def head(name: str) -> nn.Dense:
            return nn.Dense(self.nz, kernel_init=torch_kernel_init, bias_init=torch_bias_init(self.nz),
                            dtype=self.dtype, name=name)

        mu, logvar = head("mu_head")(z), head("logvar_head")(z)
        if (train if sample_latent is None else sample_latent):
            if not self.has_rng(REPARAM_RNG):
                raise ValueError("VariationalGON with train=True samples its latent: pass "
                                 f"rngs={{'{REPARAM_RNG}': key}} to apply (or rng= to the GON step)")
            eps = jax.random.normal(self.make_rng(REPARAM_RNG), mu.shape, mu.dtype)
            latent = mu + eps * jnp.exp(0.5 * logvar)
        else:
            latent = mu
        decoder = ConvDecoder(self.nz, self.stages, self.activation, self.out_activation, dtype=self.dtype,
                              name="decoder")
        return decoder(latent, train=train), mu, logvar


def variational_gon_32(nz: int = 48, ngf: int = 32, channels: int = 1) -> VariationalGON:
    """The original Variational GON: 32x32xC, nz 48, ngf 32, data in [0, 1]."""
    return VariationalGON(nz, vae32_stages(ngf, channels))
