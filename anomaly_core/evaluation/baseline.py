"""The no-learning baseline reported beside every model: distance to the mean training image.

Anomaly map A(x) = mean over channels of |x - m| (m: the mean of the normal training
images at the model resolution, no augmentation), smoothed like the model's maps; image
score = mean of A over pixels (and, MVTec-style, its maximum). Nothing is learned, so a
model that does not beat it on the same split has not learned anything that helps.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from anomaly_core import data as data_lib
from anomaly_core.evaluation import metrics as metrics_lib
from anomaly_core.networks.smoothing import GAUSSIAN_TRUNCATE



def mean_image(data_cfg, split: Any = "train", batch_size: int = 32) -> np.ndarray:
    """Mean (H, W, C) float64 of every image of `split` (a name or a loaded Split), in the
    configured value range, without augmentation."""
    total, count = None, 0
    for batch in data_lib.eval_batches(data_cfg, split, batch_size=batch_size):
        images = np.asarray(batch["image"], np.float64)[np.asarray(batch["valid"], bool)]
        total = images.sum(axis=0) if total is None else total + images.sum(axis=0)
        count += len(images)
    if not count:
        raise ValueError("the baseline needs at least one training image")
    return total / count


def anomaly_maps(images: np.ndarray, mean: np.ndarray, smoothing_sigma: float = 0.0) -> np.ndarray:
    """Baseline maps (N, H, W): mean_c |images - mean|, images (N, H, W, C), Gaussian-smoothed
    with `smoothing_sigma` pixels (0 = off; reflect borders, truncated at 4 sigma)."""
    maps = np.mean(np.abs(np.asarray(images, np.float64) - mean), axis=-1)
    if smoothing_sigma > 0:
        maps = ndimage.gaussian_filter(maps, sigma=(0, smoothing_sigma, smoothing_sigma), mode="reflect",
                                       truncate=GAUSSIAN_TRUNCATE)
    return maps


def metrics_of(maps: np.ndarray, labels: np.ndarray, masks: np.ndarray | None, *, smoothing_sigma: float = 0.0,
               fpr_limit: float = 0.3) -> dict[str, Any]:
    """Metrics of baseline maps (N, H, W) (`anomaly_maps`, already smoothed with
    `smoothing_sigma`, which is only recorded here) with labels (N,) in {0, 1} and masks
    (N, H, W) in {0, 1} or None: image AUROC of the map's mean and of its maximum; with
    masks, pixel AUROC, AUPRC and AUPRO (FPR <= fpr_limit). Labels need both classes."""
    maps = np.asarray(maps)
    out: dict[str, Any] = {
        "method": "mean training image, map mean_c |x - m|, image score = mean of the map",
        "smoothing_sigma": float(smoothing_sigma),
        "image_auroc": metrics_lib.roc_auc(maps.mean(axis=(1, 2)), labels, name="baseline image AUROC"),
        "image_auroc_map_max": metrics_lib.roc_auc(maps.max(axis=(1, 2)), labels,
                                                   name="baseline image AUROC (map max)"),
    }
    if masks is not None:
        defects = np.asarray(masks) > 0.5
        out["pixel_auroc"] = metrics_lib.roc_auc(maps.ravel(), defects.ravel(), name="baseline pixel AUROC")
        out["pixel_auprc"] = metrics_lib.average_precision(maps.ravel(), defects.ravel(),
                                                           name="baseline pixel AUPRC")
        out["pixel_aupro"] = metrics_lib.aupro(maps, defects, fpr_limit, name="baseline AUPRO")
    return out


def evaluate(data_cfg, test_split: Any, *, train: Any = "train", smoothing_sigma: float = 0.0,
             fpr_limit: float = 0.3, batch_size: int = 32) -> dict[str, Any]:
    """`metrics_of` the baseline on `test_split` (a name or a loaded Split), the mean image
    taken over `train` (a name or a loaded Split), in a pass of its own over the test split.
    `evaluation.evaluate` computes the same maps inside its scoring pass instead (the test
    images decoded once); pixel metrics are left out when the split has no masks."""
    mean = mean_image(data_cfg, train, batch_size)
    maps, labels, masks = [], [], []
    for batch in data_lib.eval_batches(data_cfg, test_split, batch_size=batch_size):
        valid = np.asarray(batch["valid"], bool)
        maps.append(anomaly_maps(np.asarray(batch["image"])[valid], mean, smoothing_sigma))
        labels.append(np.asarray(batch["label"])[valid])
        masks.append(np.asarray(batch["mask"])[valid])
    has_masks = True if isinstance(test_split, str) else bool(test_split.has_masks)
    return metrics_of(np.concatenate(maps), np.concatenate(labels), np.concatenate(masks) if has_masks else None,
                      smoothing_sigma=smoothing_sigma, fpr_limit=fpr_limit)
