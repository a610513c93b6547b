"""Corrupted MNIST (tensorflow-datasets `mnist_corrupted/<corruption>`), GON protocol.

train: identity's train split (60,000) minus the seeded validation slice;
val: that slice; test: the first `test_per_corruption` (2,000) test images of
each corruption, identity = normal (0), every other corruption = anomalous (1).
No pixel ground truth: masks are all zero and `Split.has_masks` is False.
"""

from __future__ import annotations

import functools

import ml_collections
import numpy as np

from anomaly_core.data.mvtec import validation_members
from anomaly_core.data.records import ANOMALOUS, NORMAL, DataError, Record, Split

# The GON reference notebook's 15 corruptions (tfds also has 'canny_edges', which
# the reference does not use).
MNIST_CORRUPTIONS = (
    "identity",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
)
ALL_TFDS_CORRUPTIONS = MNIST_CORRUPTIONS + ("canny_edges",)
NORMAL_CORRUPTION = "identity"


@functools.lru_cache(maxsize=32)  # 15 test corruptions + train
def load_tfds_images(corruption: str, split: str, data_dir: str, download: bool) -> np.ndarray:
    """(N, 28, 28, 1) uint8 images of `mnist_corrupted/<corruption>` `split`, in order."""
    try:
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise DataError(
            "config.data.source='mnist_corrupted' reads TensorFlow Datasets, which the default install "
            "leaves out: pip install -e '.[mnist]' (or use source 'mnist_c_local': offline, extra "
            f"[mnist_local]). ({e})") from e

    try:
        # Keep TensorFlow off accelerators: JAX owns them.
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # already initialised
        pass
    name = f"mnist_corrupted/{corruption}"
    try:
        ds = tfds.load(
            name, split=split, data_dir=data_dir or None, download=download, shuffle_files=False
        )
        chunks = [b["image"] for b in tfds.as_numpy(ds.batch(4096))]
    except Exception as e:  # pylint: disable=broad-except
        raise DataError(
            f"Could not load tensorflow-datasets {name!r} split {split!r} "
            f"(config.data.tfds_data_dir={data_dir!r}, config.data.tfds_download="
            f"{download}): {type(e).__name__}: {e}"
        ) from e
    if not chunks:
        raise DataError(f"tensorflow-datasets {name!r} split {split!r} is empty.")
    return np.concatenate(chunks).astype(np.uint8)


def _check_corruptions(corruptions) -> tuple[str, ...]:
    corruptions = tuple(corruptions)
    unknown = [c for c in corruptions if c not in ALL_TFDS_CORRUPTIONS]
    if unknown:
        raise DataError(
            f"config.data.corruptions has unknown names {unknown}; "
            f"choose from {ALL_TFDS_CORRUPTIONS}."
        )
    if NORMAL_CORRUPTION not in corruptions:
        raise DataError(
            f"config.data.corruptions must include {NORMAL_CORRUPTION!r}, the normal test class."
        )
    return corruptions


def load_split(data_cfg: ml_collections.ConfigDict, split: str) -> Split:
    """See the module docstring; `Split.arrays` holds (N, 28, 28, 1) uint8 pixels."""
    data_dir, download = str(data_cfg.tfds_data_dir), bool(data_cfg.tfds_download)
    if split in ("train", "val"):
        images = load_tfds_images(NORMAL_CORRUPTION, "train", data_dir, download)
        members = validation_members(
            len(images), float(data_cfg.val_fraction), int(data_cfg.seed), "mnist_corrupted"
        )
        keep = np.flatnonzero(members == (split == "val"))
        records = [Record(f"mnist_corrupted/identity/train/{i}", NORMAL, "good") for i in keep]
        return Split(split, records, has_masks=False, arrays=images[keep])
    n = int(data_cfg.test_per_corruption)
    if n < 1:
        raise DataError(f"config.data.test_per_corruption={n} must be >= 1.")
    records, arrays = [], []
    for corruption in _check_corruptions(data_cfg.corruptions):
        # [:n] again: the first n even when a source ignores the split slice.
        images = load_tfds_images(corruption, f"test[:{n}]", data_dir, download)[:n]
        label = NORMAL if corruption == NORMAL_CORRUPTION else ANOMALOUS
        defect = "good" if label == NORMAL else corruption
        records += [
            Record(f"mnist_corrupted/{corruption}/test/{i}", label, defect)
            for i in range(len(images))
        ]
        arrays.append(images)
    return Split("test", records, has_masks=False, arrays=np.concatenate(arrays))
