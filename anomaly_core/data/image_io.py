"""Image and mask files: cheap checks at listing time, decoding to float arrays.

Every failure is an `ImageReadError` naming the file and the reason, never a bare
PIL traceback. Decoded images are float32 in [0, 1]: 8-bit data / 255, 16-bit data
/ 65535.
"""

from __future__ import annotations

import functools
import os
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps

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
            if im.format == "PNG":
                _check_png_rows(path)
        # And a full decode (verify() leaves its image unusable, so from a fresh open):
        # verify() passes a PNG whose chunk CRCs are right but whose compressed data stream
        # is corrupt, and decoding alone ignores wrong CRCs.
        with _open(path, max_pixels) as im:
            im.load()
            _check_float_values(path, im)
            w, h = im.size
            return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)
    except ImageReadError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise ImageReadError(path, f"corrupt or truncated ({e})") from e


_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples per pixel of each PNG colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_row_bytes(width: int, height: int, bits: int, interlaced: bool) -> list[int]:
    """The size of each row of a PNG's decompressed image data (its filter byte included),
    every pass of an interlaced one in turn."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    rows = []
    for x0, y0, dx, dy in passes:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0:
            rows += [1 + (w * bits + 7) // 8] * max(h, 0)
    return rows


def _check_png_rows(path: str) -> None:
    """A PNG whose compressed image data ends early (a complete stream of too few rows)
    decodes in PIL without an error, the missing rows black: count the rows it holds."""
    with open(path, "rb") as f:
        data = f.read()
    pos, header, inflate, got = 8, None, zlib.decompressobj(), 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            got += len(inflate.decompress(body))
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or header[3] not in _PNG_SAMPLES:
        return  # PIL's own checks report it
    width, height, depth, colour, _, _, interlace = header
    rows = _png_row_bytes(width, height, depth * _PNG_SAMPLES[colour], interlace == 1)
    if got < sum(rows):
        full, total = 0, 0
        for size in rows:
            if total + size > got:
                break
            total, full = total + size, full + 1
        what = f"{full} of {len(rows)} rows" + (" (of the interlaced passes)" if interlace else "")
        raise ImageReadError(path, f"corrupt or truncated (its image data ends after {what}; a decoder would "
                                   "fill the rest with black)")


_ORIENTATION = 0x0112  # the EXIF tag; values 5 to 8 swap width and height


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION, 1))
    except Exception:  # pylint: disable=broad-except - a malformed EXIF block: the pixels as stored
        return 1


def _upright(im: Image.Image) -> Image.Image:
    """The image as a viewer shows it: a camera's EXIF orientation applied (a phone photo
    taken sideways is stored sideways with the tag that turns it upright)."""
    return ImageOps.exif_transpose(im) if _orientation(im) != 1 else im


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
    """Checks a file by decoding it once (cached per path, size and mtime); returns (width, height)
    as `decode_image` gives it (after the EXIF orientation).

    Raises ImageReadError for empty, unidentifiable, truncated, corrupt or oversized files
    (also a PNG whose image data holds fewer rows than its header says), and for float images with NaN/inf values or values outside [0, 1].
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
    modes give C = 3 (alpha dropped). An EXIF orientation tag is applied (the image upright,
    as viewers show it). Raises ImageReadError naming the file.
    """
    im = _open(path, int(max_pixels))
    try:
        with im:
            im.load()
            _check_float_values(path, im)
            return _pil_to_float(_upright(im))
    except ImageReadError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise ImageReadError(path, f"corrupt or truncated ({e})") from e


def decode_mask(path: str, max_pixels: int = 50_000_000) -> np.ndarray:
    """Decodes a mask file to (H, W) float32 in [0, 1] (colour masks: max over RGB)."""
    a = decode_image(path, max_pixels)
    return a.max(axis=-1)
