"""Anomaly-detection metrics, computed exactly (no binning), as docs/METHODS.md 4 defines them.

Conventions used throughout:
- Curves (ROC, PR, PRO, F1 sweep) count an example or pixel as predicted anomalous at
  threshold t when `score >= t`, evaluated at every unique score (scikit-learn's and
  MVTec's convention). A *fitted* threshold is applied as `score > threshold` (the GON
  reference rule, see `thresholds.py`); `thresholds.f1_max` converts between the two.
- A ranking metric (AUROC, AP, AUPRO) on labels of a single class is undefined: the
  functions raise ValueError naming the quantity (pass `name=` to say which split it is)
  rather than returning NaN, so a broken split can never pass silently into a report.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage

from anomaly_core.evaluation.thresholds import (
    as_binary_labels,
    as_finite_scores,
    f1_from_sweep,
    f1_max,
    fit_threshold,
    threshold_sweep,
)

__all__ = [
    "roc_curve", "roc_auc", "average_precision", "pro_curve", "aupro", "binary_metrics",
    "f1_max", "resize_anomaly_maps", "evaluate_anomaly_detection", "per_defect_metrics",
]

# 8-connectivity, as in MVTec's evaluation script.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def _both_classes(labels: np.ndarray, name: str) -> tuple[int, int]:
    n_pos = int(np.count_nonzero(labels))
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "normal (0)" if n_pos == 0 else "anomalous (1)"
        raise ValueError(f"{name} is undefined: all {labels.size} labels are {only}; "
                         "the split needs both normal and anomalous examples")
    return n_pos, n_neg


def _roc_from_counts(thresholds, tps, fps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def _ap_from_counts(tps, fps) -> float:
    precision = tps / (tps + fps)
    recall_step = np.diff(tps, prepend=0) / tps[-1]
    return float(np.sum(recall_step * precision))


def roc_curve(scores, labels, *, name: str = "ROC curve") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC over every unique score: (fpr, tpr, thresholds), each (K+1,).

    Starts at (0, 0) with threshold +inf, like `sklearn.metrics.roc_curve(...,
    drop_intermediate=False)`; thresholds decrease and a point counts `score >= t`.
    """
    s = as_finite_scores(scores, name)
    y = as_binary_labels(labels, name, size=s.size)
    _both_classes(y, name)
    thresholds, tps, fps = threshold_sweep(s, y, ~y)
    return _roc_from_counts(thresholds, tps, fps)


def roc_auc(scores, labels, *, name: str = "AUROC") -> float:
    """Area under the exact ROC curve (ties count 1/2, as scikit-learn's roc_auc_score)."""
    fpr, tpr, _ = roc_curve(scores, labels, name=name)
    return float(np.trapezoid(tpr, fpr))


def average_precision(scores, labels, *, name: str = "average precision") -> float:
    """sum_k (R_k - R_{k-1}) P_k over unique thresholds (scikit-learn's definition)."""
    s = as_finite_scores(scores, name)
    y = as_binary_labels(labels, name, size=s.size)
    _both_classes(y, name)
    _, tps, fps = threshold_sweep(s, y, ~y)
    return _ap_from_counts(tps, fps)


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-pixel weight 1 / (R * |region|) inside regions, 0 outside; and R."""
    ids = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i, mask in enumerate(masks):
        labelled, n = scipy.ndimage.label(mask, structure=_EIGHT_CONNECTED)
        ids[i] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += n
    sizes = np.bincount(ids.ravel(), minlength=n_regions + 1).astype(np.float64)
    per_region = np.zeros(n_regions + 1)
    per_region[1:] = 1.0 / (n_regions * sizes[1:]) if n_regions else 0.0
    return per_region[ids], n_regions


def _check_maps_masks(anomaly_maps, masks, name: str) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(anomaly_maps)
    gt = np.asarray(masks)
    if maps.ndim != 3 or maps.shape != gt.shape:
        raise ValueError(f"{name}: anomaly maps and masks must both be (N, H, W) with equal shapes; "
                         f"got {maps.shape} and {gt.shape}")
    maps = as_finite_scores(maps, f"{name} (anomaly maps)").reshape(gt.shape)
    gt = as_binary_labels(gt, f"{name} (masks)").reshape(gt.shape)
    return maps, gt


def _pro_from_counts(fps, pro_cum, n_normal: int) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([[0.0], fps / n_normal]), np.concatenate([[0.0], pro_cum])


def pro_curve(anomaly_maps, masks, *, name: str = "PRO curve") -> tuple[np.ndarray, np.ndarray]:
    """MVTec's per-region-overlap curve over every unique score: (fpr, pro), each (K+1,).

    anomaly_maps (N, H, W) float, masks (N, H, W) in {0, 1}. Regions are the 8-connected
    components of each mask; FPR is over all anomaly-free pixels of all images; PRO is
    the mean over regions (equal weight) of the fraction of the region with score >= t.
    Starts at (0, 0) and ends at (1, 1). Computed with one sort of all pixels: PRO(t) is a
    cumulative sum of per-pixel weights 1 / (R * |region|).
    """
    maps, gt = _check_maps_masks(anomaly_maps, masks, name)
    weights, n_regions = _region_weights(gt)
    n_normal = int(np.count_nonzero(~gt))
    if n_regions == 0 or n_normal == 0:
        raise ValueError(f"{name} needs at least one anomalous region and one anomaly-free pixel; "
                         f"got {n_regions} regions and {n_normal} anomaly-free pixels")
    _, fps, pro_cum = threshold_sweep(maps.ravel(), ~gt.ravel(), weights.ravel())
    return _pro_from_counts(fps, pro_cum, n_normal)


def _clipped_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [0, x_max]; x non-decreasing, linear at the cut."""
    keep = int(np.searchsorted(x, x_max, side="right"))
    xs, ys = x[:keep], y[:keep]
    if keep < x.size and xs[-1] < x_max:
        x0, x1, y0, y1 = x[keep - 1], x[keep], y[keep - 1], y[keep]
        xs = np.append(xs, x_max)
        ys = np.append(ys, y0 + (y1 - y0) * (x_max - x0) / (x1 - x0))
    return float(np.trapezoid(ys, xs))


def _check_fpr_limit(fpr_limit: float) -> float:
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must lie in (0, 1]; got {fpr_limit}")
    return float(fpr_limit)


def aupro(anomaly_maps, masks, fpr_limit: float = 0.3, *, name: str = "AUPRO") -> float:
    """Normalised area under the PRO curve up to `fpr_limit`: area / fpr_limit, in [0, 1]."""
    limit = _check_fpr_limit(fpr_limit)
    fpr, pro = pro_curve(anomaly_maps, masks, name=name)
    return _clipped_area(fpr, pro, limit) / limit


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den:
        return num / den
    return 1.0 if both_empty else 0.0


def binary_metrics(pred, target) -> dict[str, float | int]:
    """Confusion counts and ratios of a binary prediction against a binary target.

    pred, target: arrays of equal shape, bool or {0, 1}. Returns tp, fp, tn, fn (int) and
    precision, recall, f1, dice, iou, accuracy (float; dice == f1 for binary sets). A 0/0
    ratio is 1.0 when prediction and target are both empty (perfect agreement on "no
    anomaly") and 0.0 otherwise.
    """
    p = np.asarray(pred)
    t = np.asarray(target)
    if p.shape != t.shape:
        raise ValueError(f"binary_metrics: prediction shape {p.shape} != target shape {t.shape}")
    p = as_binary_labels(p, "binary_metrics prediction")
    t = as_binary_labels(t, "binary_metrics target")
    if p.size == 0:
        raise ValueError("binary_metrics: empty prediction and target")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    tn = p.size - tp - fp - fn
    both_empty = tp + fp + fn == 0
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, both_empty)
    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
        "f1": f1,
        "dice": f1,
        "iou": _ratio(tp, tp + fp + fn, both_empty),
        "accuracy": (tp + tn) / p.size,
    }


def resize_anomaly_maps(anomaly_maps, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, H, W) maps to (N, *size), half-pixel centres, no antialiasing.

    Equals torch's `interpolate(mode='bilinear', align_corners=False)`; used to evaluate
    at native mask resolution (docs/METHODS.md 4: MVTec's script compares at original size).
    """
    maps = np.asarray(anomaly_maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"resize_anomaly_maps: maps must be (N, H, W); got {maps.shape}")
    out_h, out_w = (int(v) for v in size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resize_anomaly_maps: size must be positive; got {size}")

    def axis_weights(n_in: int, n_out: int):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    lo, hi, w = axis_weights(maps.shape[1], out_h)
    rows = maps[:, lo, :] * (1 - w)[None, :, None] + maps[:, hi, :] * w[None, :, None]
    lo, hi, w = axis_weights(maps.shape[2], out_w)
    return rows[:, :, lo] * (1 - w) + rows[:, :, hi] * w


def _pixel_ranking_metrics(maps, masks, fpr_limit: float) -> dict[str, Any]:
    """Pixel AUROC, AUPRC, AUPRO and the oracle pixel F1-max from one sort of all pixels."""
    maps, gt = _check_maps_masks(maps, masks, "test pixel metrics")
    flat_gt = gt.ravel()
    _both_classes(flat_gt, "pixel AUROC (test split)")
    weights, n_regions = _region_weights(gt)
    thresholds, tps, fps, pro_cum = threshold_sweep(maps.ravel(), flat_gt, ~flat_gt, weights.ravel())
    fpr, tpr, _ = _roc_from_counts(thresholds, tps, fps)
    pro_fpr, pro = _pro_from_counts(fps, pro_cum, int(fps[-1]))
    oracle_f1, oracle_t = f1_from_sweep(thresholds, tps, fps)
    return {
        "pixel_auroc": float(np.trapezoid(tpr, fpr)),
        "pixel_auprc": _ap_from_counts(tps, fps),
        "pixel_aupro": _clipped_area(pro_fpr, pro, fpr_limit) / fpr_limit,
        "oracle_pixel_f1_max": oracle_f1,
        "oracle_pixel_f1_threshold": oracle_t,
        "_counts": {"test_pixels": int(flat_gt.size), "test_anomalous_pixels": int(tps[-1]),
                    "test_regions": n_regions},
    }


def _threshold_entry(value: float, rule: str, k: float, fit_scores: np.ndarray,
                     fit_labels: np.ndarray | None, what: str) -> dict[str, Any]:
    n_anom = 0 if fit_labels is None else int(np.count_nonzero(fit_labels))
    entry = {
        "value": float(value),
        "rule": rule,
        "description": ("F1-optimal on validation " + what) if rule == "f1"
        else f"mean + {k:g} * std (population, ddof=0) of validation normal {what}",
        "fitted_on": "validation",
        "n_fit": int(fit_scores.size),
        "n_fit_anomalous": n_anom,
        "prediction": "anomalous when score > threshold",
    }
    if rule == "mean_std":
        entry["k"] = float(k)
    return entry


def per_defect_metrics(scores, labels, defects, maps=None, masks=None) -> dict[str, dict[str, float | int]]:
    """Detection quality per defect type: each type's anomalous images against ALL normal images.

    Args:
      scores, labels: (N,) image scores and labels {0, 1} of the test split.
      defects: (N,) defect-type names (the test sub-folder; ignored for normal images).
      maps, masks: optional (N, H, W) anomaly maps and masks {0, 1}: add the map-max image AUROC
        and the pixel AUROC over that type's images plus the normal images.
    Returns {defect: {"images": n, "image_auroc": ..., ["image_auroc_map_max", "pixel_auroc"]}},
    sorted by name; {} when there are no normal or no anomalous images.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    defects = np.asarray([str(d) for d in defects])
    if defects.shape != scores.shape or labels.shape != scores.shape:
        raise ValueError(f"per-defect metrics: {scores.size} scores, {labels.size} labels and "
                         f"{defects.size} defect names must match")
    normal = labels == 0
    if not normal.any():
        return {}
    map_max = None if maps is None else np.asarray(maps).reshape(scores.size, -1).max(axis=1)
    out: dict[str, dict[str, float | int]] = {}
    for name in sorted(set(defects[labels == 1].tolist())):
        own = (labels == 1) & (defects == name)
        pick = own | normal
        entry: dict[str, float | int] = {"images": int(own.sum()),
                                         "image_auroc": roc_auc(scores[pick], labels[pick])}
        if map_max is not None:
            entry["image_auroc_map_max"] = roc_auc(map_max[pick], labels[pick])
        if masks is not None and maps is not None:
            gt = np.asarray(masks)[pick] != 0
            if gt.any():
                entry["pixel_auroc"] = roc_auc(np.asarray(maps)[pick], gt)
        out[name] = entry
    return out


def evaluate_anomaly_detection(
    *,
    test_scores,
    test_labels,
    test_defects=None,
    val_scores=None,
    val_labels=None,
    test_maps=None,
    test_masks=None,
    val_maps=None,
    val_masks=None,
    threshold_rule: str = "auto",
    k: float = 2.0,
    fpr_limit: float = 0.3,
    mask_resolution: str = "model",
) -> dict[str, Any]:
    """The full metrics dict for metrics.json (docs/METHODS.md 4).

    Args:
      test_scores, test_labels: (N,) image scores (the method's own) and labels {0, 1}.
      test_defects: optional (N,) defect-type names: adds `per_defect` (`per_defect_metrics`).
      val_scores, val_labels: (M,) validation image scores and optional labels (None =
        all normal). None skips every threshold-based number (never fitted on test).
      test_maps, test_masks: (N, H, W) anomaly maps and masks {0, 1}. Maps without masks
        give only the "max of the anomaly map" image AUROC; masks give pixel metrics.
      val_maps, val_masks: (M, H, W) validation maps (and masks) for the pixel threshold.
      threshold_rule: 'auto' | 'f1' | 'mean_std' (see `thresholds.fit_threshold`).
      k: the std multiplier of the mean + k * std rule.
      fpr_limit: AUPRO integration limit.
      mask_resolution: 'model' or 'native', recorded in the protocol (the caller resizes).

    Returns a JSON-ready dict: `scalars` (name -> number), `split` (name -> the split the
    number comes from), `thresholds` ('image' / 'pixel' entries only when fitted),
    `counts`, `protocol`, `skipped` (name -> reason) and, with test_defects, `per_defect`.
    Raises ValueError when the test labels (or pooled test masks) hold a single class.
    """
    if mask_resolution not in ("model", "native"):
        raise ValueError(f"mask_resolution must be 'model' or 'native'; got {mask_resolution!r}")
    if val_masks is not None and val_maps is None:
        raise ValueError("val_masks were given without val_maps")
    limit = _check_fpr_limit(fpr_limit)
    scores = as_finite_scores(test_scores, "test image scores")
    labels = as_binary_labels(test_labels, "test image labels", size=scores.size)
    n_pos, n_neg = _both_classes(labels, "image AUROC (test split)")

    scalars: dict[str, float | int] = {}
    split: dict[str, str] = {}
    skipped: dict[str, str] = {}
    fitted: dict[str, Any] = {}
    counts: dict[str, int] = {"test_images": int(scores.size), "test_anomalous_images": n_pos,
                              "test_normal_images": n_neg}

    def put(name: str, value, where: str) -> None:
        scalars[name] = value
        split[name] = where

    test, oracle = "test", "test (oracle: threshold chosen on the test set)"
    put("image_auroc", roc_auc(scores, labels, name="image AUROC (test split)"), test)
    put("image_ap", average_precision(scores, labels, name="image AP (test split)"), test)
    f1, t = f1_max(scores, labels, name="oracle image F1-max (test split)")
    put("oracle_image_f1_max", f1, oracle)
    put("oracle_image_f1_threshold", t, oracle)

    maps = gt = None
    if test_maps is not None:
        maps = np.asarray(test_maps)
        if maps.ndim != 3 or maps.shape[0] != scores.size:
            raise ValueError(f"test_maps must be (N={scores.size}, H, W); got {maps.shape}")
        map_max = as_finite_scores(maps.reshape(maps.shape[0], -1).max(axis=1), "test anomaly maps")
        put("image_auroc_map_max", roc_auc(map_max, labels, name="map-max image AUROC (test split)"), test)
    else:
        skipped["image_auroc_map_max"] = "no test anomaly maps given"

    if test_masks is not None:
        if maps is None:
            raise ValueError("test_masks were given without test_maps")
        gt = np.asarray(test_masks)
        if gt.shape != maps.shape:
            raise ValueError(f"test_masks shape {gt.shape} != test_maps shape {maps.shape}")
        normal_with_mask = np.flatnonzero((labels == 0) & (gt.reshape(gt.shape[0], -1) != 0).any(axis=1))
        if normal_with_mask.size:
            raise ValueError(f"test images labelled normal have non-empty masks (indices "
                             f"{normal_with_mask[:5].tolist()}...); masks and labels disagree")
        pixel = _pixel_ranking_metrics(maps, gt, limit)
        counts.update(pixel.pop("_counts"))
        for name, value in pixel.items():
            put(name, value, oracle if name.startswith("oracle_") else test)
    else:
        for name in ("pixel_auroc", "pixel_auprc", "pixel_aupro"):
            skipped[name] = "no test masks given"

    # Threshold-based numbers: thresholds come from validation data only.
    if val_scores is None:
        skipped["image_threshold"] = "no validation scores given; thresholds are never fitted on test"
    else:
        v_scores = as_finite_scores(val_scores, "validation image scores")
        v_labels = None if val_labels is None else as_binary_labels(
            val_labels, "validation image labels", size=v_scores.size)
        counts["val_images"] = int(v_scores.size)
        counts["val_anomalous_images"] = 0 if v_labels is None else int(np.count_nonzero(v_labels))
        value, rule = fit_threshold(v_scores, v_labels, rule=threshold_rule, k=k)
        fitted["image"] = _threshold_entry(value, rule, k, v_scores, v_labels, "image scores")
        put("image_threshold", value, "validation")
        at = binary_metrics(scores > value, labels)
        for name in ("tn", "fp", "fn", "tp", "precision", "recall", "f1", "accuracy"):
            put(f"image_{name}", at[name], "test (threshold fitted on validation)")

    if gt is not None and val_maps is None:
        skipped["pixel_threshold"] = "no validation anomaly maps given; thresholds are never fitted on test"
    elif gt is not None:
        v_maps = np.asarray(val_maps)
        if v_maps.ndim != 3 or v_maps.shape[1:] != maps.shape[1:]:
            raise ValueError(f"val_maps must be (M, {maps.shape[1]}, {maps.shape[2]}) like test_maps; "
                             f"got {v_maps.shape}")
        pix_scores, pix_labels = _validation_pixels(v_maps, val_masks, val_labels)
        value, rule = fit_threshold(pix_scores, pix_labels, rule=threshold_rule, k=k)
        fitted["pixel"] = _threshold_entry(value, rule, k, pix_scores, pix_labels, "pixel scores")
        put("pixel_threshold", value, "validation")
        at = binary_metrics(maps > value, gt != 0)
        for name in ("tn", "fp", "fn", "tp", "precision", "recall", "f1", "dice", "iou"):
            put(f"pixel_{name}", at[name], "test (threshold fitted on validation)")

    result: dict[str, Any] = {
        "scalars": scalars,
        "split": split,
        "thresholds": fitted,
        "counts": counts,
        "protocol": {
            "image_score": "the method's own image score; image_auroc_map_max uses max of the anomaly map",
            "curves": "exact, every unique score; predicted anomalous when score >= t",
            "threshold_prediction": "anomalous when score > threshold",
            "aupro": f"8-connected regions, FPR over all anomaly-free test pixels, clipped at "
                     f"FPR {limit:g} with linear interpolation, trapezoid area / {limit:g}",
            "aupro_fpr_limit": limit,
            "pixel_metrics": "all test pixels pooled (normal images contribute all-negative masks)",
            "mask_resolution": mask_resolution,
            "zero_division": "0/0 ratios are 1.0 when prediction and target are both empty, else 0.0",
        },
        "skipped": skipped,
    }
    if test_defects is not None:
        result["per_defect"] = per_defect_metrics(scores, labels, test_defects, maps, gt)
    return result


def _validation_pixels(v_maps: np.ndarray, val_masks, val_labels) -> tuple[np.ndarray, np.ndarray]:
    """Validation pixel scores and labels for threshold fitting.

    With masks, every pixel with its mask label; without masks, only pixels of images
    labelled normal (the labels of pixels inside anomalous images are unknown).
    """
    if val_masks is not None:
        v_masks = np.asarray(val_masks)
        if v_masks.shape != v_maps.shape:
            raise ValueError(f"val_masks shape {v_masks.shape} != val_maps shape {v_maps.shape}")
        return (as_finite_scores(v_maps, "validation anomaly maps"),
                as_binary_labels(v_masks, "validation masks"))
    if val_labels is not None:
        img_labels = as_binary_labels(val_labels, "validation image labels", size=v_maps.shape[0])
        v_maps = v_maps[~img_labels]
    scores = as_finite_scores(v_maps, "validation anomaly maps")
    return scores, np.zeros(scores.size, dtype=bool)
