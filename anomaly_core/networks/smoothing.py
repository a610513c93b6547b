"""Gaussian smoothing of anomaly maps, the same for every method and for the no-learning baseline.

Equal to `scipy.ndimage.gaussian_filter(maps, sigma=(0, s, s), mode='reflect', truncate=4)`,
written as a jittable sum of shifted copies.
"""

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default


def gaussian_kernel(sigma: float, truncate: float = GAUSSIAN_TRUNCATE) -> np.ndarray:
    """Normalised 1-D Gaussian taps (2r + 1,), r = int(truncate * sigma + 0.5).

    That radius rule is scipy.ndimage's (round, not ceil), so results match
    `gaussian_filter(..., truncate=4.0)`.
    """
    if sigma <= 0:
        raise ValueError(f"smoothing_sigma must be > 0 for a kernel, got {sigma}")
    radius = int(truncate * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / float(sigma)) ** 2)
    return taps / taps.sum()


def _smooth_axis(maps: Array, taps: np.ndarray, axis: int) -> Array:
    radius = (len(taps) - 1) // 2
    n = maps.shape[axis]
    widths = [(0, 0)] * maps.ndim
    widths[axis] = (radius, radius)
    # numpy's 'symmetric' pad (edge sample repeated: d c b a | a b c d | d c b a) is
    # scipy.ndimage's 'reflect' mode, including pads wider than the image.
    padded = jnp.pad(maps, widths, mode="symmetric")
    # A sum of shifted copies, not lax.conv: accelerator convolutions may run float32 at
    # reduced (TF32/bf16) precision by default.
    out = jnp.zeros_like(maps)
    for k, tap in enumerate(taps):
        out = out + jnp.asarray(tap, maps.dtype) * jax.lax.slice_in_dim(padded, k, k + n, axis=axis)
    return out


def gaussian_smooth(maps: Array, sigma: float) -> Array:
    """Separable Gaussian blur of maps (B, H, W) over H and W; sigma in pixels, 0 = off.

    Truncated at 4 sigma (radius int(4 sigma + 0.5)), reflect ('symmetric') borders; equals
    scipy.ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode='reflect', truncate=4).
    sigma is a static Python number.
    """
    if sigma < 0:
        raise ValueError(f"smoothing_sigma must be >= 0 (0 = off), got {sigma}")
    if maps.ndim != 3:
        raise ValueError(f"anomaly maps must be (B, H, W), got shape {maps.shape}")
    if sigma == 0:
        return maps
    taps = gaussian_kernel(sigma)
    return _smooth_axis(_smooth_axis(maps, taps, axis=1), taps, axis=2)
