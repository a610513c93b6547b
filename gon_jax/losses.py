"""GON inner/outer losses (docs/METHODS.md 2.1, 2.4, 2.5) and the CAE baseline loss (2.7).

All take images NHWC. Every GON loss is a mean over the batch of a per-sample term, so
d loss / d z_i = (1/B) d term_i / d z_i: gon_jax.origin relies on this to rescale latents.
`gon_loss` casts bfloat16 model outputs to float32 first, so the losses (and the inner
gradient that gives the latent) are float32 when the model computes in bfloat16.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from anomaly_core.networks.precision import at_least_f32
from anomaly_core.networks.torch_layers import check_choice

Array = jax.Array

LOSS_KINDS = ("mse_sum_channels", "siren_sum_pixels", "vae_bce_kl")


def mse_sum_channels(recon: Array, x: Array) -> Array:
    """Conv GON loss: sum over channels of (recon - x)^2, mean over (B, H, W). Scalar.

    PyTorch reference: ((g - x)**2).sum(1).mean() on NCHW.
    """
    return jnp.mean(jnp.sum(jnp.square(recon - x), axis=-1))


def siren_sum_pixels(recon: Array, x: Array) -> Array:
    """Implicit GON loss: sum over pixels (H, W) of (recon - x)^2, mean over (B, C). Scalar.

    PyTorch reference: ((g - x)**2).sum(1).mean() on (B, H*W, C); for C = 1 this is
    "sum over pixels, mean over batch".
    """
    return jnp.mean(jnp.sum(jnp.square(recon - x), axis=(1, 2)))


def binary_cross_entropy(p: Array, x: Array) -> Array:
    """Elementwise torch.nn.functional.binary_cross_entropy: -(x log p + (1-x) log(1-p)).

    Like PyTorch, each log is clamped at -100 so p in {0, 1} gives a finite loss.
    """
    log_p = jnp.maximum(jnp.log(p), -100.0)
    log_1mp = jnp.maximum(jnp.log1p(-p), -100.0)
    return -(x * log_p + (1.0 - x) * log_1mp)


def kl_divergence(mu: Array, logvar: Array) -> Array:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample: -0.5 sum(1 + logvar - mu^2 - exp(logvar)). (B,)."""
    return -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)


def vae_bce_kl(recon: Array, x: Array, mu: Array, logvar: Array, kl_weight: float = 1.0) -> Array:
    """Variational GON loss: BCE summed over pixels and channels, mean over batch, plus
    kl_weight * KL mean over batch (the original code calls it with weight 1.0). Scalar.

    recon, x: (B, H, W, C) in [0, 1]; mu, logvar: (B, nz).
    """
    bce = jnp.mean(jnp.sum(binary_cross_entropy(recon, x), axis=(1, 2, 3)))
    return bce + kl_weight * jnp.mean(kl_divergence(mu, logvar))


def gon_loss(kind: str, outputs: Array | tuple[Array, Array, Array], x: Array) -> Array:
    """The loss `kind` of a GON model's outputs (an image, or (recon, mu, logvar)) against x."""
    check_choice(kind, LOSS_KINDS, "config.model.loss_kind")
    fn: Callable[..., Array] = {"mse_sum_channels": mse_sum_channels,
                                "siren_sum_pixels": siren_sum_pixels,
                                "vae_bce_kl": vae_bce_kl}[kind]
    is_tuple = isinstance(outputs, tuple)
    outputs = tuple(at_least_f32(o) for o in outputs) if is_tuple else at_least_f32(outputs)
    if is_tuple != (kind == "vae_bce_kl"):
        raise ValueError(f"loss_kind {kind!r} does not fit the model's outputs "
                         f"({'(recon, mu, logvar)' if is_tuple else 'an image'})")
    if is_tuple:
        recon, mu, logvar = outputs
        return fn(recon, x, mu, logvar)
    return fn(outputs, x)


def cae_mse_loss(recon: Array, x: Array) -> Array:
    """Convolutional autoencoder loss: mean over all elements of (recon - x)^2 (nn.MSELoss). Scalar."""
    return jnp.mean(jnp.square(recon - x))
