"""How large the bricks are in the demo's training crops and in its normal test crops.

  python -m benchmarks.demo_scale [--config=configs/quickstart.py]

The demo cuts its training crops from the upper rows of the brick photograph and its test
crops from a band at the bottom, where the wall is nearer the camera. This measures the
brick width in each split as the lag of the first peak of the horizontal autocorrelation
of the mean-subtracted grey rows (the distance between vertical mortar lines, in pixels at
config.data.image_size), and the vertical one the same way. A ratio above 1 means the test
shows bricks larger than any unzoomed training crop does. Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from anomaly_core import data as data_lib
from benchmarks.common import command_line, load_config, split_arrays, write_results


def autocorrelation(images: np.ndarray, axis: int) -> np.ndarray:
    """Mean circular autocorrelation (normalised to 1 at lag 0) of grey images (N, H, W, C)
    along `axis` (1 = vertical, 2 = horizontal), lags 0 .. size // 2."""
    grey = images.astype(np.float64).mean(-1)
    grey = grey - grey.mean(axis=axis, keepdims=True)
    power = np.abs(np.fft.rfft(grey, axis=axis)) ** 2
    ac = np.fft.irfft(power, n=grey.shape[axis], axis=axis).mean(axis=tuple(a for a in (0, 1, 2) if a != axis))
    return ac[: grey.shape[axis] // 2 + 1] / ac[0]


def first_peak(ac: np.ndarray) -> int | None:
    """Lag of the first local maximum after the autocorrelation has gone below zero, or None."""
    below = np.flatnonzero(ac < 0)
    if not len(below):
        return None
    for lag in range(int(below[0]) + 1, len(ac) - 1):
        if ac[lag] >= ac[lag - 1] and ac[lag] >= ac[lag + 1]:
            return lag
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quickstart.py", help="a demo config (its data settings)")
    parser.add_argument("--out", default="benchmarks/results/demo_scale")
    args = parser.parse_args()
    config = load_config(args.config)
    splits = data_lib.Splits(config.data)
    train, _, _ = split_arrays(config.data, splits["train"])
    test, _, labels = split_arrays(config.data, splits["test"])
    normal = test[labels == 0]
    rows = []
    for name, axis in (("horizontal (brick width)", 2), ("vertical", 1)):
        lags = {split: first_peak(autocorrelation(images, axis)) for split, images in
                (("train", train), ("test normal", normal))}
        ratio = None if None in lags.values() else round(lags["test normal"] / lags["train"], 3)
        rows.append({"direction": name, "train_period_px": lags["train"],
                     "test_period_px": lags["test normal"], "ratio": ratio})
        print(rows[-1], flush=True)
    meta = {"config": args.config, "image size": int(config.data.image_size),
            "images": f"{len(train)} training, {len(normal)} normal test", "data root": os.path.dirname(
                splits["train"].records[0].path) if len(splits["train"]) else ""}
    print(write_results(args.out, title="The demo's brick size: training crops against normal test crops",
                        command=command_line(), meta=meta, rows=rows,
                        columns=(("direction", "direction"), ("train_period_px", "training crops: period (px)"),
                                 ("test_period_px", "normal test crops: period (px)"),
                                 ("ratio", "test / train"))))


if __name__ == "__main__":
    main()
