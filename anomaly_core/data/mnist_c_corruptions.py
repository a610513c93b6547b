"""The 15 MNIST-C corruptions (Mu & Gilmer 2019), in numpy / scipy / scikit-image.

Each corruption maps one 28x28 digit, float32 in [0, 1], to a 28x28 float32 image in
[0, 1], drawing its randomness from the `np.random.Generator` it is given. The
severities are the ones MNIST-C was generated with (the defaults of the paper's public
`corruptions.py`); the parameters in brackets below are those facts, the code is this
project's own:

  shot_noise     Poisson(x * 3) / 3                                  (severity 5: 3)
  impulse_noise  salt-and-pepper on a 0.17 share of the pixels        (severity 4: 0.17)
  glass_blur     Gaussian sigma 0.7, 2 passes of random swaps with a
                 neighbour up to 1 px up/left, Gaussian again          (severity 1: 0.7, 1, 2)
  motion_blur    ImageMagick-style one-sided motion blur, radius 10,
                 sigma 3, angle uniform in [-45, 45] degrees           (severity 1: 10, 3)
  shear          inverse map [[1, -sin s], [0, cos s]], s = +-0.4,
                 image centre (13.5, 13.5) fixed                       (severity 2: 0.4)
  scale          inverse map scale 1 / 0.7 about the centre (the digit
                 shrinks to 70 %)                                       (severity 3: 1/0.7)
  rotate         rotation by +-0.4 rad about the centre                 (severity 2: 0.4)
  brightness     V channel of HSV + 0.5; for grey images = min(x + 0.5, 1)  (severity 5: 0.5)
  translate      shift by +-3 px in x and in y (signs random)           (severity 3: 3)
  stripe         columns 0-6 and 21-27 inverted (deterministic)
  fog            x + 3 * plasma fractal (diamond-square, 256x256, decay
                 1.4, top-left 28x28 crop), rescaled by max / (max + 3)  (severity 5: 3, 1.4)
  spatter        mud blobs: N(0.65, 0.3) smoothed (sigma 1), > 0.65,
                 mask smoothed (sigma 1.5), >= 0.8, blended to grey 63/255  (severity 4)
  dotted_line    a line from column 0 to 27 (random rows 0..26) with a
                 2.3 px log fall-off, every other pair of columns blank
  zigzag         a zigzag (amplitude 2, half-period 2) from column 2 to 25,
                 start row 0..26, end row start + (-5..4)
  canny_edges    scikit-image's Canny edge map (sigma 1), binary
`identity` returns the image unchanged. `corrupt_images` applies one corruption to a
stack of uint8 digits with a seeded generator per image (deterministic, order-free).
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
from scipy import ndimage
from skimage import feature, transform

SIDE = 28
CENTRE = (SIDE - 1) / 2  # 13.5: the point shear / rotate / scale keep fixed

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's `filters.gaussian` defaults: mode 'nearest', truncate 4."""
    return ndimage.gaussian_filter(x.astype(np.float64), sigma, mode="nearest", truncate=4.0)


def _to_uint8_grid(x: np.ndarray) -> np.ndarray:
    """Rounds [0, 1] values to multiples of 1/255 (what an 8-bit image round trip keeps)."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0) / 255.0


def identity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return x


def shot_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    photons = 3.0
    return np.clip(rng.poisson(x * photons) / photons, 0.0, 1.0)


def impulse_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    amount = 0.17
    flipped = rng.random(x.shape) <= amount
    salt = rng.random(x.shape) <= 0.5  # salt vs pepper 50 / 50
    out = x.copy()
    out[flipped & salt] = 1.0
    out[flipped & ~salt] = 0.0
    return out


def glass_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma, max_delta, passes = 0.7, 1, 2
    # The reference stores the first blur as 8-bit (truncating), then swaps pixels.
    img = (_gaussian(x, sigma) * 255.0).astype(np.uint8)
    for _ in range(passes):
        for h in range(SIDE - max_delta, max_delta, -1):
            for w in range(SIDE - max_delta, max_delta, -1):
                if rng.random() < 0.5:
                    dy, dx = rng.integers(-max_delta, max_delta, size=2)  # in [-1, 0]
                    hp, wp = h + dy, w + dx
                    img[h, w], img[hp, wp] = img[hp, wp], img[h, w]
    return np.clip(_gaussian(img / 255.0, sigma), 0.0, 1.0)


def motion_blur_kernel(radius: int, sigma: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """ImageMagick's MotionBlurImage kernel: 2 * radius + 1 one-sided taps.

    Returns (weights (K,), offsets (K, 2) as integer (dy, dx)): weight_i ~ exp(-i^2 /
    (2 sigma^2)), normalised; tap i sits at round(i * (sin a, cos a)) from the pixel.
    """
    width = 2 * int(radius) + 1
    i = np.arange(width, dtype=np.float64)
    weights = np.exp(-(i * i) / (2.0 * sigma * sigma))
    weights /= weights.sum()
    a = np.deg2rad(angle_deg)
    dx = np.ceil(i * np.cos(a) - 0.5).astype(int)
    dy = np.ceil(i * np.sin(a) - 0.5).astype(int)
    return weights, np.stack([dy, dx], axis=1)


def motion_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = 10, 3.0
    weights, offsets = motion_blur_kernel(radius, sigma, rng.uniform(-45.0, 45.0))
    pad = int(np.abs(offsets).max())
    padded = np.pad(_to_uint8_grid(x), pad, mode="edge")  # ImageMagick's 'edge' virtual pixels
    out = np.zeros_like(x, dtype=np.float64)
    for w, (dy, dx) in zip(weights, offsets):
        out += w * padded[pad + dy : pad + dy + SIDE, pad + dx : pad + dx + SIDE]
    return _to_uint8_grid(out)  # the reference round-trips through an 8-bit PNG


def _warp_about_centre(x: np.ndarray, linear: np.ndarray) -> np.ndarray:
    """Bilinear warp whose inverse map is `linear` (2x2, in (col, row) = (x, y)
    coordinates) about the image centre; outside pixels are 0."""
    shift = CENTRE * (1.0 - linear.sum(axis=1))  # keeps (13.5, 13.5) fixed
    matrix = np.eye(3)
    matrix[:2, :2], matrix[:2, 2] = linear, shift
    return transform.warp(x, transform.AffineTransform(matrix=matrix), order=1, mode="constant", cval=0.0)


def _random_sign(rng: np.random.Generator) -> float:
    return float(rng.choice([-1.0, 1.0]))


def shear(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # scikit-image < 0.19's AffineTransform(shear=s): [[1, -sin s], [0, cos s]].
    s = 0.4 * _random_sign(rng)
    return np.clip(_warp_about_centre(x, np.array([[1.0, -np.sin(s)], [0.0, np.cos(s)]])), 0.0, 1.0)


def rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = 0.4 * _random_sign(rng)
    c, s = np.cos(r), np.sin(r)
    return np.clip(_warp_about_centre(x, np.array([[c, -s], [s, c]])), 0.0, 1.0)


def scale(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return np.clip(_warp_about_centre(x, np.eye(2) / 0.7), 0.0, 1.0)


def brightness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    # grey -> RGB -> HSV has V = x and S = 0, so V + 0.5 and back to grey is x + 0.5.
    return np.clip(x + 0.5, 0.0, 1.0)


def translate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dx, dy = 3.0 * _random_sign(rng), 3.0 * _random_sign(rng)
    matrix = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])  # inverse map
    out = transform.warp(x, transform.AffineTransform(matrix=matrix), order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0)


def stripe(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    out = x.copy()
    out[:, :7] = 1.0 - out[:, :7]
    out[:, 21:] = 1.0 - out[:, 21:]
    return out


def plasma_fractal(rng: np.random.Generator, size: int = 256, decay: float = 3.0) -> np.ndarray:
    """Diamond-square height map (size, size) in [0, 1], toroidal; size a power of two.

    As in MNIST-C (after ImageNet-C): each new point is the mean of its 4 neighbours plus
    wibble * U(-wibble, wibble), wibble starting at 100 and divided by `decay` per level.
    """
    if size & (size - 1):
        raise ValueError(f"plasma_fractal size={size} must be a power of two")
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0::step, 0::step]
        # Square step: centres of the squares.
        around = corners + np.roll(corners, -1, axis=0)
        around = around + np.roll(around, -1, axis=1)
        grid[half::step, half::step] = around / 4 + wibble * rng.uniform(-wibble, wibble, around.shape)
        # Diamond step: edge midpoints, from two corners and two square centres.
        centres = grid[half::step, half::step]
        top = (centres + np.roll(centres, 1, axis=0)) + (corners + np.roll(corners, -1, axis=1))
        grid[0::step, half::step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        left = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=0))
        grid[half::step, 0::step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    strength, decay = 3.0, 1.4
    peak = x.max()
    out = x + strength * plasma_fractal(rng, 256, decay)[:SIDE, :SIDE]
    return np.clip(out * peak / (peak + strength), 0.0, 1.0)


def spatter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    loc, spread, sigma, cut, mask_sigma = 0.65, 0.3, 1.0, 0.65, 1.5
    liquid = _gaussian(rng.normal(loc, spread, size=x.shape), sigma)
    liquid[liquid < cut] = 0.0
    mask = _gaussian((liquid > cut).astype(np.float64), mask_sigma)
    mask[mask < 0.8] = 0.0
    mud = 63.0 / 255.0
    return np.clip(x * (1.0 - mask) + mud * mask, 0.0, 1.0)


def line_layer(c0: float, r0: float, c1: float, r1: float) -> np.ndarray:
    """(28, 28) in [0, 1]: a line through (col c0, row r0) and (c1, r1), columns c0..c1.

    Value 1 + log(1 - d / 2.3) at vertical distance d < 2.3 from the line, else 0;
    a vertical segment (c0 == c1) draws nothing.
    """
    if c1 == c0:
        return np.zeros((SIDE, SIDE))
    cols = np.arange(SIDE, dtype=np.float64)[None, :]
    rows = np.arange(SIDE, dtype=np.float64)[:, None]
    slope = (r1 - r0) / (c1 - c0)
    dist = np.clip(np.abs(rows - (slope * (cols - c0) + r0)), 0.0, 2.3 - 1e-10)
    layer = np.clip(np.log(1.0 - dist / 2.3) + 1.0, 0.0, 1.0)
    layer[:, : max(int(np.floor(c0)), 0)] = 0.0
    layer[:, int(np.ceil(c1)) :] = 0.0
    return layer


def dotted_line(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r0, r1 = rng.integers(0, 27, size=2)
    layer = line_layer(0, r0, 27, r1)
    cols = np.arange(SIDE)
    layer[:, (cols // 2) % 2 == 0] = 0.0  # columns 0-1, 4-5, 8-9, ... blank
    return np.clip(x + layer, 0.0, 1.0)


def zigzag_vertices(r0: int, r1: int) -> np.ndarray:
    """(2, K) (cols, rows) of the zigzag from (2, r0) towards (25, r1), as MNIST-C draws it."""
    length, amplitude = 2.0, 2.0
    c0, c1 = 2, 25
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    points = [(0.0, 0.0)]
    r_i = 0.0
    for i in range(int((d - length) // (2 * length)) + 1):
        r_i = (-1) ** i * amplitude
        points.append(((2 * i + 1) * length, r_i))
    max_c = 2 * length * (d // (2 * length))
    if d != max_c:
        points.append((d, r_i / (2 * (d - max_c))))
    cs, rs = np.array(points).T
    cos, sin = np.cos(theta), np.sin(theta)
    return np.stack([cos * cs - sin * rs + c0, sin * cs + cos * rs + r0])


def zigzag(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r0 = int(rng.integers(0, 27))
    r1 = r0 + int(rng.integers(-5, 5))
    cs, rs = zigzag_vertices(r0, r1)
    out = x.astype(np.float64)
    for i in range(1, len(cs)):
        out = np.clip(out + line_layer(cs[i - 1], rs[i - 1], cs[i], rs[i]), 0.0, 1.0)
    return out


def canny_edges(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    del rng
    return feature.canny(x.astype(np.float64), sigma=1.0).astype(np.float64)


CORRUPTIONS: dict[str, Corruption] = {
    "identity": identity,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "shear": shear,
    "scale": scale,
    "rotate": rotate,
    "brightness": brightness,
    "translate": translate,
    "stripe": stripe,
    "fog": fog,
    "spatter": spatter,
    "dotted_line": dotted_line,
    "zigzag": zigzag,
    "canny_edges": canny_edges,
}


def image_rng(seed: int, corruption: str, index: int) -> np.random.Generator:
    """The generator of image `index` under `corruption`: independent of the others."""
    return np.random.default_rng([int(seed), zlib.crc32(corruption.encode()), int(index)])


def corrupt_images(images: np.ndarray, corruption: str, seed: int, indices=None) -> np.ndarray:
    """Applies `corruption` to uint8 digits (N, 28, 28[, 1]); returns (N, 28, 28, 1) uint8.

    Image k uses `image_rng(seed, corruption, indices[k])` (indices default 0..N-1), so a
    digit's corrupted version never depends on which other digits are corrupted with it.
    Outputs are rounded to 8 bits, like the stored MNIST-C images.
    """
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown MNIST-C corruption {corruption!r}; choose from {tuple(CORRUPTIONS)}")
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise ValueError(f"corrupt_images expects (N, 28, 28[, 1]) digits, got shape {images.shape}")
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    fn = CORRUPTIONS[corruption]
    out = np.empty(images.shape + (1,), np.uint8)
    for k, (img, idx) in enumerate(zip(images, indices)):
        y = fn(img.astype(np.float64) / 255.0, image_rng(seed, corruption, idx))
        out[k, ..., 0] = np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out
