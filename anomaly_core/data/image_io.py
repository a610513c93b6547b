"""Image and mask files: cheap checks at listing time, decoding to float arrays.

Every failure is an `ImageReadError` naming the file and the reason, never a bare
PIL traceback. Decoded images are float32 in [0, 1]: 8-bit data / 255, 16-bit data
/ 65535.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
from PIL import Image

from anomaly_core.data.records import DataError

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".gif",
)

# Formats whose `verify()` checks what a decode does not (PNG: every chunk CRC).
_VERIFIED_FORMATS = ("PNG",)
# Float images ('F' mode, e.g. 32-bit TIFF) must hold values in [0, 1] (a float image in
# 0..255 would otherwise be clipped to white); this much rounding above 1 is tolerated.
_FLOAT_TOLERANCE = 1e-6


class ImageReadError(DataError):
    """An image or mask file that cannot be used."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"Cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


def is_image_name(path: str) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def utf8_problem(path: str) -> str | None:
    """Why `path` is unusable because it is not valid UTF-8, else None.

    Python holds undecodable name bytes as lone surrogates; scores.csv and predictions.csv
    are UTF-8 and could not hold such a name, so the file is skipped before any training.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return f"path {os.fsencode(path)!r} is not valid UTF-8 (rename it; outputs are UTF-8)"
    return None


def resolves_inside(path: str, real_root: str) -> bool:
    """True when `path`, after resolving symlinks, lies in the folder `real_root`."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


def _open(path: str, max_pixels: int) -> Image.Image:
    """Opens (header only) and checks size; raises ImageReadError."""
    try:
        if os.path.getsize(path) == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        with warnings.catch_warnings():
            # The size limit below replaces PIL's global bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageReadError(
            path,
            f"exceeds config.data.max_image_pixels={max_pixels} and PIL's "
            f"own limit (possible decompression bomb: {e})",
        ) from e
    except Image.UnidentifiedImageError as e:
        raise ImageReadError(path, "not an image file PIL can identify") from e
    except Exception as e:  # pylint: disable=broad-except
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from e
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageReadError(
            path,
            f"{w}x{h} = {w * h} pixels exceeds config.data.max_image_pixels="
            f"{max_pixels} (possible decompression bomb)",
        )
    if w == 0 or h == 0:
        im.close()
        raise ImageReadError(path, f"zero-sized image ({w}x{h})")
    return im


@functools.lru_cache(maxsize=65536)
def _check_cached(path: str, size: int, mtime_ns: int, max_pixels: int) -> tuple[int, int]:
    del size, mtime_ns  # cache key only: a rewritten file is checked again
    try:
        with _open(path, max_pixels) as im:
            if im.format in _VERIFIED_FORMATS:
                im.verify()
        # And a full decode (verify() leaves its image unusable, so from a fresh open):
        # verify() passes a PNG whose chunk CRCs are right but whose compressed data stream
        # is corrupt, and decoding alone ignores wrong CRCs.
        with _open(path, max_pixels) as im:
            im.load()
            _check_float_values(path, im)
            return im.size
    except ImageReadError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise ImageReadError(path, f"corrupt or truncated ({e})") from e


def _check_float_values(path: str, im: Image.Image) -> None:
    """Float images: every value finite and in [0, 1], else ImageReadError naming the rule."""
    if im.mode != "F":
        return
    a = np.asarray(im, np.float32)
    if not np.all(np.isfinite(a)):
        raise ImageReadError(path, f"{int(np.size(a) - np.isfinite(a).sum())} pixel value(s) are NaN or inf")
    lo, hi = float(a.min()), float(a.max())
    if lo < -_FLOAT_TOLERANCE or hi > 1.0 + _FLOAT_TOLERANCE:
        raise ImageReadError(path, f"float pixel values span [{lo:.4g}, {hi:.4g}]; float images must hold "
                                   "values in [0, 1] (save 8- or 16-bit integers, or scale to [0, 1])")


def check_image(path: str, max_pixels: int = 50_000_000) -> tuple[int, int]:
    """Checks a file by decoding it once (cached per path, size and mtime); returns (width, height).

    Raises ImageReadError for empty, unidentifiable, truncated, corrupt or oversized files,
    and for float images with NaN/inf values or values outside [0, 1].
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise ImageReadError(path, f"{type(e).__name__}: {e}") from e
    return _check_cached(path, st.st_size, st.st_mtime_ns, int(max_pixels))


def _pil_to_float(im: Image.Image) -> np.ndarray:
    """(H, W, C) float32 in [0, 1], C = 1 (gray) or 3 (colour)."""
    mode = im.mode
    if mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float32) / 65535.0
    elif mode == "I":
        # 32-bit integer mode is how PIL may hold 16-bit PNG/TIFF data.
        a = np.clip(np.asarray(im, np.float64) / 65535.0, 0.0, 1.0).astype(np.float32)
    elif mode == "F":
        a = np.clip(np.asarray(im, np.float32), 0.0, 1.0)
    elif mode in ("1", "L", "LA", "La"):
        a = np.asarray(im.convert("L"), np.float32) / 255.0
    elif mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        # Alpha is dropped: pixel colours are kept as stored.
        a = np.asarray(im, np.float32)[..., :3] / 255.0
    elif mode in ("P", "PA"):
        a = np.asarray(im.convert("RGBA"), np.float32)[..., :3] / 255.0
    else:  # CMYK, YCbCr, LAB, HSV, ...
        a = np.asarray(im.convert("RGB"), np.float32) / 255.0
    if a.ndim == 2:
        a = a[..., None]
    return a


def decode_image(path: str, max_pixels: int = 50_000_000) -> np.ndarray:
    """Decodes an image file to (H, W, C) float32 in [0, 1], C in {1, 3}.

    Grayscale (8/16-bit, binary) gives C = 1; palette, RGBA, CMYK and other colour
    modes give C = 3 (alpha dropped). Raises ImageReadError naming the file.
    """
    im = _open(path, int(max_pixels))
    try:
        with im:
            im.load()
            _check_float_values(path, im)
            return _pil_to_float(im)
    except ImageReadError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise ImageReadError(path, f"corrupt or truncated ({e})") from e


def decode_mask(path: str, max_pixels: int = 50_000_000) -> np.ndarray:
    """Decodes a mask file to (H, W) float32 in [0, 1] (colour masks: max over RGB)."""
    a = decode_image(path, max_pixels)
    return a.max(axis=-1)
