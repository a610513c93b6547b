"""scikit-learn's bundled 8x8 digits as a one-class problem (no download).

`normal_digit` is normal; every other digit is anomalous. Seeded split of the
normal images: `digits_test_fraction` to test, then `val_fraction` of the rest to
val, the remainder to train. Test also gets `digits_per_anomalous_class` images
of each other digit (0 = all of them). Pixels are 0..16 / 16; the pipeline resizes
them to `image_size`. No pixel ground truth (`has_masks` False).
"""

from __future__ import annotations

import functools
import zlib

import ml_collections
import numpy as np

from anomaly_core.data.mvtec import validation_members
from anomaly_core.data.records import ANOMALOUS, NORMAL, DataError, Record, Split


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]
    return images, bunch.target.astype(np.int64)


def split_indices(
    labels: np.ndarray,
    normal_digit: int,
    *,
    test_fraction: float,
    val_fraction: float,
    per_anomalous_class: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Sorted indices of each split: {'train', 'val', 'test'}."""
    rng = np.random.default_rng([int(seed), zlib.crc32(b"digits/test")])
    normals = np.flatnonzero(labels == normal_digit)
    n_test = int(round(len(normals) * test_fraction))
    perm = rng.permutation(normals)
    test, rest = perm[:n_test], np.sort(perm[n_test:])
    members = validation_members(len(rest), val_fraction, seed, "digits")
    anomalies = []
    for digit in sorted(set(labels.tolist()) - {normal_digit}):
        idx = np.flatnonzero(labels == digit)
        if per_anomalous_class > 0:
            idx = rng.choice(idx, min(per_anomalous_class, len(idx)), replace=False)
        anomalies.append(idx)
    return {
        "train": rest[~members],
        "val": rest[members],
        "test": np.sort(np.concatenate([test] + anomalies)),
    }


def load_split(data_cfg: ml_collections.ConfigDict, split: str) -> Split:
    """See the module docstring; `Split.arrays` holds (N, 8, 8, 1) float32 in [0, 1]."""
    digit = int(data_cfg.normal_digit)
    if not 0 <= digit <= 9:
        raise DataError(f"config.data.normal_digit={digit} must be in 0..9.")
    fraction = float(data_cfg.digits_test_fraction)
    if not 0.0 < fraction < 1.0:
        raise DataError(f"config.data.digits_test_fraction={fraction} must be in (0, 1).")
    images, labels = _digits()
    idx = split_indices(
        labels,
        digit,
        test_fraction=fraction,
        val_fraction=float(data_cfg.val_fraction),
        per_anomalous_class=int(data_cfg.digits_per_anomalous_class),
        seed=int(data_cfg.seed),
    )[split]
    records = []
    for i in idx:
        normal = labels[i] == digit
        records.append(
            Record(
                f"digits/{i}",
                NORMAL if normal else ANOMALOUS,
                "good" if normal else f"digit_{labels[i]}",
            )
        )
    return Split(split, records, has_masks=False, arrays=images[idx])
