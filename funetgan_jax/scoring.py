"""f-UNetGAN anomaly maps and image scores (docs/METHODS.md 1.7).

The reference's map (utils/test.py), |xr - x| + mean(|f_dec(xr) - f_dec(x)|) on D's decoder
features, adds ONE scalar averaged over the whole batch and all pixels and channels to every
pixel: that term then neither localises nor separates images. We use a per-pixel, per-image
distance between D's outputs of x and xr, averaged over channels: its pixel logits by default
(config.train.encoder_target='logits'), its decoder features with 'features' (both are at image
resolution); docs/METHODS.md section 6 compares the two scorings.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from anomaly_core.networks.smoothing import gaussian_smooth
from anomaly_core.networks.torch_layers import check_choice
from funetgan_jax.losses import features_of

Array = jax.Array

IMAGE_SCORES = ("fanogan", "max_map", "mean_map")
def residual_map(x: Array, xr: Array, dec_x: Array, dec_xr: Array, kappa: float) -> Array:
    """mean_c |xr - x| + kappa * mean_c |f_dec(xr) - f_dec(x)|: (B, H, W) from images (B, H, W, C)
    and pixel targets (B, H, W, c)."""
    return jnp.mean(jnp.abs(xr - x), axis=-1) + kappa * jnp.mean(jnp.abs(dec_xr - dec_x), axis=-1)


MAP_STATS_EPS = 1e-8


def critic_map(pixel_logits: Array, stats: dict[str, Array], weight: float) -> Array:
    """The U-Net critic's per-pixel verdict as an anomaly map term, (B, H, W, 1) -> (B, H, W).

    weight * sd_res * (mean_c - D_dec(x)) / sd_c: a pixel the critic finds less real than
    the training pixels on average scores higher; standardised by the critic's pixel
    statistics on training images and brought to the residual map's spread (sd_res), so
    weight 1 gives both terms the same say whatever the logits' scale. stats: the first and
    second moments residual_mean, residual_sq, critic_mean, critic_sq (train.batch_map_stats).
    """
    sd_res = jnp.sqrt(jnp.maximum(stats["residual_sq"] - jnp.square(stats["residual_mean"]), 0.0) + MAP_STATS_EPS)
    sd_c = jnp.sqrt(jnp.maximum(stats["critic_sq"] - jnp.square(stats["critic_mean"]), 0.0) + MAP_STATS_EPS)
    return weight * sd_res * (stats["critic_mean"] - pixel_logits[..., 0].astype(jnp.float32)) / sd_c


RefineCarry = tuple[Array, Any]  # (z (B, z_dim) float32, Adam state)


def refine_start(z: Array, lr: float) -> RefineCarry:
    """The refinement's starting point: z (B, z_dim) as float32 (no gradient flows back
    into it) and a fresh Adam state."""
    z = jax.lax.stop_gradient(z).astype(jnp.float32)
    return z, optax.adam(lr).init(z)


def refine_update(generate: Callable[[Array], Array], x: Array, carry: RefineCarry, lr: float) -> RefineCarry:
    """One Adam update (learning rate `lr`) of z on sum ||G(z) - x||^2; x: (B, H, W, C)."""
    tx = optax.adam(lr)
    target = x.astype(jnp.float32)
    v, opt = carry
    grad = jax.grad(lambda u: jnp.sum(jnp.square(generate(u).astype(jnp.float32) - target)))(v)
    updates, opt = tx.update(grad, opt)
    return optax.apply_updates(v, updates), opt


def refine_latent(generate: Callable[[Array], Array], x: Array, z: Array, steps: int, lr: float) -> Array:
    """AnoGAN's latent search started from the encoder: `steps` Adam updates (learning rate
    `lr`) of z on sum ||G(z) - x||^2. x: (B, H, W, C); z: (B, z_dim) -> refined z (B, z_dim).

    Adam normalises each coordinate on its own and the loss is a sum over images, so every
    image's latent moves as if refined alone: the result does not depend on the batch.
    steps and lr are static (a `lax.scan` of `refine_update`s from `refine_start`).
    """
    if steps < 0 or lr <= 0:
        raise ValueError(f"refine_steps must be >= 0 and refine_lr > 0, got {steps} and {lr}")
    if steps == 0:
        return z
    carry = refine_start(z, lr)
    return jax.lax.scan(lambda c, _: (refine_update(generate, x, c, lr), None), carry, None, length=steps)[0][0]


def anomaly_scores(
    x: Array,
    xr: Array,
    feats_x: object | None,
    feats_xr: object | None,
    *,
    kappa: float = 1.0,
    smoothing_sigma: float = 0.0,
    image_score: str = "fanogan",
    critic_map: Array | None = None,
) -> tuple[Array, Array]:
    """Image scores (B,) and anomaly maps (B, H, W), larger = more anomalous.

    x, xr = G(E(x)): (B, H, W, C); feats_*: (global_features (B, F), pixel_features
    (B, H, W, c)) or DiscriminatorOutputs carrying them; both None when kappa is 0 (the
    critic's features then weigh nothing and need not be computed).
      map A = mean_c |xr - x| + kappa * mean_c |f_dec(xr) - f_dec(x)| (+ critic_map (B, H, W)
        when given, see `critic_map`), then Gaussian smoothing with `smoothing_sigma` pixels
        (0 = off);
      image_score 'fanogan': mean_{H,W,C} (xr - x)^2 + kappa * mean_F (f_enc(xr) - f_enc(x))^2;
        'max_map': max over pixels of the (smoothed) map; 'mean_map': its mean.
    smoothing_sigma and image_score are static settings (jit with them closed over).
    """
    check_choice(image_score, IMAGE_SCORES, "image_score")
    if x.ndim != 4 or x.shape != xr.shape:
        raise ValueError(f"x and xr must be NHWC batches of one shape, got {x.shape} and {xr.shape}")
    if feats_x is None or feats_xr is None:
        if kappa != 0 or (feats_x is None) != (feats_xr is None):
            raise ValueError(f"the critic's features of x and xr are needed for kappa={kappa} (give both or, "
                             "with kappa 0, neither)")
        maps = jnp.mean(jnp.abs(xr - x), axis=-1)
        enc_x = enc_xr = jnp.zeros((x.shape[0], 1), x.dtype)
    else:
        enc_x, dec_x = features_of(feats_x)
        enc_xr, dec_xr = features_of(feats_xr)
        if dec_x.shape != dec_xr.shape or dec_x.shape[:3] != x.shape[:3]:
            raise ValueError(
                f"pixel features of x {dec_x.shape} and xr {dec_xr.shape} must be (B, H, W, c) "
                f"at the image resolution {x.shape[:3]}"
            )
        if enc_x.shape != enc_xr.shape:
            raise ValueError(f"global features of x {enc_x.shape} and xr {enc_xr.shape} differ in shape")
        maps = residual_map(x, xr, dec_x, dec_xr, kappa)
    if critic_map is not None:
        if critic_map.shape != maps.shape:
            raise ValueError(f"critic map {critic_map.shape} must be (B, H, W) = {maps.shape}")
        maps = maps + critic_map
    maps = gaussian_smooth(maps, smoothing_sigma)
    if image_score == "fanogan":
        residual = jnp.mean(jnp.square(xr - x), axis=(1, 2, 3))
        scores = residual + kappa * jnp.mean(jnp.square(enc_xr - enc_x), axis=tuple(range(1, enc_x.ndim)))
    elif image_score == "max_map":
        scores = jnp.max(maps, axis=(1, 2))
    else:
        scores = jnp.mean(maps, axis=(1, 2))
    return scores, maps
