"""Pixel transforms on numpy arrays: resize, channels, value range, augmentation.

Resizing uses PIL's bilinear filter, which widens its support when shrinking
(antialiasing), the same filter torchvision's `Resize` applies to PIL images in
the references. Images are float32 (H, W, C) in [0, 1] until `to_value_range`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# torchvision RandomResizedCrop default aspect-ratio range.
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
MASK_THRESHOLD = 0.5

Box = tuple[int, int, int, int]  # (top, left, height, width)


def _resize_plane(plane: np.ndarray, size: int, box: Box | None) -> np.ndarray:
    if box is not None:
        # Crop, then resize (torchvision's resized_crop): PIL's `box=` argument would
        # let the filter read pixels outside the crop.
        top, left, h, w = box
        plane = plane[top : top + h, left : left + w]
    im = Image.fromarray(np.ascontiguousarray(plane, np.float32))
    return np.asarray(im.resize((size, size), Image.BILINEAR), np.float32)


def resize_image(image: np.ndarray, size: int, box: Box | None = None) -> np.ndarray:
    """(H, W, C) -> (size, size, C), bilinear with antialiasing; optional crop box."""
    if box is None and image.shape[:2] == (size, size):
        return image.astype(np.float32, copy=False)
    planes = [_resize_plane(image[..., c], size, box) for c in range(image.shape[-1])]
    return np.stack(planes, axis=-1)


def resize_mask(mask: np.ndarray, size: int, box: Box | None = None) -> np.ndarray:
    """(H, W) in [0, 1] -> (size, size) in {0, 1}: bilinear resize, then >= 0.5.

    A pixel at least half covered by the (filtered) defect counts as defective;
    defects thinner than about half an output pixel vanish, as in any
    resize-then-threshold ground truth.
    """
    if box is None and mask.shape == (size, size):
        resized = mask.astype(np.float32, copy=False)
    else:
        resized = _resize_plane(mask, size, box)
    return (resized >= MASK_THRESHOLD).astype(np.float32)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, 1|3) -> (H, W, channels): gray replicated, or ITU-R 601-2 luminance."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=-1)
    if have == 3 and channels == 1:
        weights = np.asarray([0.299, 0.587, 0.114], np.float32)
        return (image @ weights)[..., None].astype(np.float32)
    raise ValueError(f"Cannot convert {have} channels to {channels}.")


def to_value_range(image: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Maps [0, 1] to `value_range`, (0, 1) or (-1, 1)."""
    lo, hi = value_range
    if (lo, hi) == (0.0, 1.0):
        return image.astype(np.float32, copy=False)
    return (image * (hi - lo) + lo).astype(np.float32)


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = DEFAULT_RATIO,
) -> Box:
    """torchvision's `RandomResizedCrop.get_params`: (top, left, h, w).

    Ten tries at an area fraction in `scale` and a log-uniform aspect ratio in
    `ratio`; if none fits, the largest centred crop within `ratio`.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def augment(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_scale: tuple[float, float] | None,
    hflip: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Training augmentation on an already resized (S, S, C) image and (S, S) mask.

    As the f-UNetGAN reference (Resize(S), then RandomResizedCrop(S, crop_scale),
    then RandomHorizontalFlip): the crop is taken from the resized image and
    resized back to S. `crop_scale=None` skips the crop.
    """
    size = image.shape[0]
    if crop_scale is not None:
        box = random_resized_crop_box(rng, image.shape[0], image.shape[1], tuple(crop_scale))
        image = resize_image(image, size, box)
        mask = resize_mask(mask, size, box)
    if hflip and rng.uniform() < 0.5:
        image = image[:, ::-1]
        mask = mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)
