"""Writers of small MVTec-layout trees and broken files for the data tests."""

from __future__ import annotations

import os
import struct
import time
import zlib

import ml_collections
import numpy as np
from PIL import Image

from anomaly_core.data import default_data_config

# Anomalous images of `make_tree` carry a white rectangle exactly where their
# mask is; normal images never reach 255 in the red channel.
DEFECT_BOX = (4, 6, 10, 14)  # top, left, bottom, right (exclusive)


def write_image(path: str, image: np.ndarray | Image.Image) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path)
    return path


def noise_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 with values in [0, 200]."""
    return rng.integers(0, 201, (height, width, 3), dtype=np.uint8)


def make_tree(
    root: str,
    category: str = "widget",
    *,
    n_train: int = 10,
    n_test_good: int = 3,
    defects: dict[str, int] | None = None,
    size: tuple[int, int] = (24, 20),
    seed: int = 0,
    train_dir: str = "good",
) -> str:
    """Writes <root>/<category>/{train,test,ground_truth}; returns the category folder.

    size is (height, width). Files are named 000.png, 001.png, ...
    """
    defects = {"crack": 2, "hole": 3} if defects is None else defects
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, category) if category else root
    h, w = size
    for i in range(n_train):
        write_image(
            os.path.join(folder, "train", train_dir, f"{i:03d}.png"), noise_image(rng, h, w)
        )
    for i in range(n_test_good):
        write_image(os.path.join(folder, "test", train_dir, f"{i:03d}.png"), noise_image(rng, h, w))
    top, left, bottom, right = DEFECT_BOX
    for defect, count in defects.items():
        for i in range(count):
            image = noise_image(rng, h, w)
            image[top:bottom, left:right] = 255
            mask = np.zeros((h, w), np.uint8)
            mask[top:bottom, left:right] = 255
            write_image(os.path.join(folder, "test", defect, f"{i:03d}.png"), image)
            write_image(os.path.join(folder, "ground_truth", defect, f"{i:03d}_mask.png"), mask)
    return folder


def png_with_header_size(path: str, width: int, height: int) -> str:
    """A valid tiny PNG whose IHDR claims width x height (CRC fixed up)."""
    small = path + ".tmp.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(small)
    with open(small, "rb") as f:
        data = f.read()
    os.remove(small)
    i = data.index(b"IHDR")
    ihdr = bytearray(data[i : i + 17])
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(data[:i] + bytes(ihdr) + crc + data[i + 21 :])
    return path


def truncate(path: str, keep: float = 0.5) -> str:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return path


def tiny_config(root: str, **overrides) -> ml_collections.ConfigDict:
    """`config.data` for an MVTec-layout tree at `root`: 16 px, RGB, [0, 1]."""
    cfg = default_data_config()
    cfg.source = "mvtec"
    cfg.root = root
    cfg.categories = ("widget",)
    cfg.image_size = 16
    cfg.read_threads = 2
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def flip_byte_in_largest_file(folder) -> str:
    """Flips one bit in the middle of the largest file under `folder` (a checkpoint's state:
    its compressed array data, which has no checksum of its own); returns that file."""
    files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs]
    path = max(files, key=os.path.getsize)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x10]))
    return path


def mean_score_fn(delay: float = 0.0):
    """A stand-in for a trained method's score function (no training needed): image score =
    mean pixel, map = mean over channels, reconstruction = the input; sleeps `delay` s a batch."""

    def score(batch):
        time.sleep(delay)
        image = batch["image"]
        return {"image_score": image.mean(axis=(1, 2, 3)), "anomaly_map": image.mean(axis=-1),
                "reconstruction": image}

    return score
