"""Real/fake mixing for the f-UNetGAN discriminator step (docs/METHODS.md 1.5).

Every mixing weight here is the weight of the REAL image: 1 = real, 0 = fake, so
`mixed = w * real + (1 - w) * fake` and the consistency target is
`w * D_dec(real) + (1 - w) * D_dec(fake)` for Mixup (w = lam, (B, 1, 1, 1)) and CutMix
(w = mask M, (B, H, W, 1)) alike. All functions are jit-compatible with static shapes.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from anomaly_core.networks.torch_layers import check_choice

Array = jax.Array

CONSISTENCY_MODES = ("mixup", "cutmix", "none")
INTERPOLATION_MODES = ("per_channel", "per_sample")


def _check_pair(real: Array, fake: Array) -> None:
    if real.ndim != 4 or real.shape != fake.shape:
        raise ValueError(
            f"real and fake must be NHWC batches of one shape, got {real.shape} and {fake.shape}"
        )


def mixup(rng: Array, real: Array, fake: Array) -> tuple[Array, Array]:
    """Mixup: lam ~ U(0, 1) per sample; mixed = lam * real + (1 - lam) * fake.

    real, fake: (B, H, W, C). Returns mixed (B, H, W, C) and lam (B, 1, 1, 1) in [0, 1).
    """
    _check_pair(real, fake)
    lam = jax.random.uniform(rng, (real.shape[0], 1, 1, 1), dtype=real.dtype)
    return lam * real + (1.0 - lam) * fake, lam


class CutMixBox(NamedTuple):
    """The random draws of U-Net GAN's CutMix and the clipped box they give, each (B,).

    lam in [0, 1); centre_y in [0, H), centre_x in [0, W); the box is rows [y1, y2) and
    columns [x1, x2); inverted True where the mask was flipped (box = real).
    """

    lam: Array
    centre_y: Array
    centre_x: Array
    y1: Array
    y2: Array
    x1: Array
    x2: Array
    inverted: Array


def cutmix_box(rng: Array, batch: int, height: int, width: int) -> CutMixBox:
    """Draws one CutMix box per sample exactly as boschresearch/unetgan `mixup.CutMix`.

    lam ~ Beta(1, 1) = U(0, 1); cut = int(S * sqrt(1 - lam)) per side (S = H for rows,
    W for columns; the reference is square); centre uniform over pixels; box
    [c - cut // 2, c + cut // 2) clipped to the image, so an unclipped side is
    2 * (cut // 2) pixels (cut - 1 when cut is odd), as in the reference; inverted with
    probability 0.5 (the reference's `torch.rand(1) > 0.5`).
    """
    if batch < 1 or height < 1 or width < 1:
        raise ValueError(f"cutmix needs positive batch, height, width, got {(batch, height, width)}")
    k_lam, k_y, k_x, k_flip = jax.random.split(rng, 4)
    lam = jax.random.uniform(k_lam, (batch,), dtype=jnp.float32)
    ratio = jnp.sqrt(1.0 - lam)
    # floor == Python int() truncation here because the product is non-negative.
    cut_h = jnp.floor(height * ratio).astype(jnp.int32)
    cut_w = jnp.floor(width * ratio).astype(jnp.int32)
    centre_y = jax.random.randint(k_y, (batch,), 0, height)
    centre_x = jax.random.randint(k_x, (batch,), 0, width)
    y1 = jnp.clip(centre_y - cut_h // 2, 0, height)
    y2 = jnp.clip(centre_y + cut_h // 2, 0, height)
    x1 = jnp.clip(centre_x - cut_w // 2, 0, width)
    x2 = jnp.clip(centre_x + cut_w // 2, 0, width)
    inverted = jax.random.bernoulli(k_flip, 0.5, (batch,))
    return CutMixBox(lam, centre_y, centre_x, y1, y2, x1, x2, inverted)


def box_mask(box: CutMixBox, height: int, width: int) -> Array:
    """Mask (B, H, W, 1) float32: 0 inside the box and 1 outside, swapped where inverted."""
    rows = jnp.arange(height)[None, :]
    cols = jnp.arange(width)[None, :]
    in_rows = (rows >= box.y1[:, None]) & (rows < box.y2[:, None])  # (B, H)
    in_cols = (cols >= box.x1[:, None]) & (cols < box.x2[:, None])  # (B, W)
    inside = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    real = jnp.logical_xor(~inside, box.inverted[:, None, None])
    return real.astype(jnp.float32)[..., None]


def cutmix_mask(rng: Array, batch: int, height: int, width: int) -> Array:
    """U-Net GAN CutMix mask (B, H, W, 1) in {0, 1}, 1 = take the real image."""
    return box_mask(cutmix_box(rng, batch, height, width), height, width)


def cutmix(rng: Array, real: Array, fake: Array) -> tuple[Array, Array]:
    """CutMix: mixed = M * real + (1 - M) * fake. Returns mixed (B, H, W, C), M (B, H, W, 1)."""
    _check_pair(real, fake)
    b, h, w, _ = real.shape
    mask = cutmix_mask(rng, b, h, w).astype(real.dtype)
    return mask * real + (1.0 - mask) * fake, mask


def consistency_mix(
    rng: Array, real: Array, fake: Array, consistency: str
) -> tuple[Array, Array] | tuple[None, None]:
    """Dispatches on the `consistency` setting: 'mixup', 'cutmix' or 'none'.

    Returns (mixed, real weight) as `mixup` / `cutmix` do, or (None, None) for 'none'
    (a static, trace-time choice).
    """
    check_choice(consistency, CONSISTENCY_MODES, "consistency")
    if consistency == "mixup":
        return mixup(rng, real, fake)
    if consistency == "cutmix":
        return cutmix(rng, real, fake)
    return None, None


def interpolation_weights(rng: Array, batch: int, channels: int, mode: str = "per_channel") -> Array:
    """Gradient-penalty interpolation weights a ~ U(0, 1) for xh = a * real + (1 - a) * fake.

    mode 'per_channel' (reference, PyTorch shape (B, C, 1, 1)) -> (B, 1, 1, C);
    'per_sample' -> (B, 1, 1, 1). Both broadcast over (B, H, W, C).
    """
    check_choice(mode, INTERPOLATION_MODES, "interpolation")
    return jax.random.uniform(rng, (batch, 1, 1, channels if mode == "per_channel" else 1))
