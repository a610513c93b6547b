"""Evaluation figures as uint8 RGB arrays: per-image panels, ROC / PRO curves, histograms.

Figures are drawn on matplotlib's Agg canvas directly (never pyplot), so nothing opens a
window and the global backend of the process is left alone.
"""
from __future__ import annotations

import io
import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["image_grid", "panel", "save_png", "encode_png", "plot_roc", "plot_pro", "plot_score_histogram"]

_MAX_CURVE_POINTS = 4000


def _render(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _as_display_image(x, value_range: tuple[float, float], name: str) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) in value_range -> (H, W, 3) float in [0, 1]."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"panel: {name} must be (H, W), (H, W, 1) or (H, W, 3); got {np.shape(x)}")
    lo, hi = value_range
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def _infer_value_range(image: np.ndarray) -> tuple[float, float]:
    # Images are either [0, 1] or [-1, 1] (ARCHITECTURE.md); any negative value means the latter.
    return (-1.0, 1.0) if float(np.min(image)) < 0 else (0.0, 1.0)


def panel(
    image,
    reconstruction,
    anomaly_map,
    mask,
    *,
    threshold: float | None = None,
    title: str = "",
    value_range: tuple[float, float] | None = None,
    map_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """input | reconstruction | heatmap overlay | ground-truth contour (without a mask: the
    predicted region map > threshold filled in), as (h, w, 3) uint8.

    image, reconstruction: (H, W, C), C in {1, 3}, in `value_range` ([0, 1] or [-1, 1];
    None infers it from the image). anomaly_map: (H, W). mask: (H, W) in {0, 1} or None.
    threshold: when given, the predicted region (map > threshold) is outlined on the
    overlay. map_range: heatmap colour limits (default: the map's own min and max).
    """
    img = np.asarray(image)
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.ndim != 2 or amap.shape != img.shape[:2]:
        raise ValueError(f"panel: anomaly_map must be (H, W) = {img.shape[:2]}; got {amap.shape}")
    vr = _infer_value_range(img) if value_range is None else tuple(value_range)
    if not vr[1] > vr[0]:
        raise ValueError(f"panel: value_range must be (low, high) with low < high; got {value_range}")
    shown = _as_display_image(img, vr, "image")
    recon = None if reconstruction is None else _as_display_image(reconstruction, vr, "reconstruction")
    vmin, vmax = (float(amap.min()), float(amap.max())) if map_range is None else map_range
    gt = None if mask is None else np.asarray(mask, dtype=np.float32).reshape(amap.shape)

    fig = Figure(figsize=(8.8, 2.6), dpi=100)
    axes = fig.subplots(1, 4)
    axes[0].imshow(shown)
    axes[0].set_title("input", fontsize=9)
    if recon is not None:
        axes[1].imshow(recon)
    axes[1].set_title("reconstruction", fontsize=9)
    axes[2].imshow(shown)
    axes[2].imshow(amap, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
    if threshold is not None and np.any(amap > threshold) and not np.all(amap > threshold):
        axes[2].contour(amap > threshold, levels=[0.5], colors="white", linewidths=1.0)
    axes[2].set_title("anomaly map" + ("" if threshold is None else f" (> {threshold:.3g})"), fontsize=9)
    axes[3].imshow(shown)
    if gt is not None:
        if np.any(gt > 0.5):
            axes[3].contour(gt > 0.5, levels=[0.5], colors="red", linewidths=1.0)
        axes[3].set_title("ground truth", fontsize=9)
    elif threshold is not None:  # no ground truth: the predicted defect region instead
        predicted = np.ma.masked_where(~(amap > threshold), np.ones_like(amap))
        axes[3].imshow(predicted, cmap="autumn", alpha=0.6, vmin=0, vmax=1)
        axes[3].set_title("predicted defect", fontsize=9)
    else:
        axes[3].set_title("no mask, no threshold", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _render(fig)


def image_grid(images, value_range: tuple[float, float], *, columns: int = 8, gap: int = 2) -> np.ndarray:
    """A grid of images (N, H, W, C), C in {1, 3}, in `value_range`, row by row, `columns` per
    row, separated by `gap` white pixels: (rows*(H+gap)-gap, cols*(W+gap)-gap, 3) uint8,
    cols = min(columns, N)."""
    a = np.asarray(images, np.float32)
    if a.ndim != 4 or a.shape[-1] not in (1, 3) or a.shape[0] < 1:
        raise ValueError(f"image_grid: images must be (N >= 1, H, W, 1 or 3); got {a.shape}")
    if columns < 1 or gap < 0:
        raise ValueError(f"image_grid: columns={columns} must be >= 1 and gap={gap} >= 0")
    n, h, w, _ = a.shape
    cols = min(columns, n)
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, image in enumerate(a):
        r, c = divmod(i, cols)
        tile = np.round(_as_display_image(image, value_range, "image") * 255.0).astype(np.uint8)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out


def encode_png(array) -> bytes:
    """(H, W), (H, W, 3) or (H, W, 4) uint8 -> PNG bytes."""
    a = np.asarray(array)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ValueError(f"PNG arrays must be uint8 (H, W[, 3|4]); got {a.dtype} {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, array) -> None:
    """Writes a uint8 image atomically (temporary file, then os.replace)."""
    data = encode_png(array)
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Drawing only: pixel curves have millions of points; the metrics use the full curve.
    if x.size <= _MAX_CURVE_POINTS:
        return x, y
    keep = np.unique(np.linspace(0, x.size - 1, _MAX_CURVE_POINTS).astype(np.int64))
    return x[keep], y[keep]


def _finish(fig: Figure, path) -> np.ndarray:
    fig.tight_layout()
    rgb = _render(fig)
    if path is not None:
        save_png(path, rgb)
    return rgb


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike | None = None,
    *,
    title: str = "ROC (test split)",
) -> np.ndarray:
    """ROC curves, legend label -> (fpr, tpr); returns the RGB figure, saved when path."""
    if not curves:
        raise ValueError("plot_roc: no curves given")
    fig = Figure(figsize=(4.5, 4.2), dpi=100)
    ax = fig.subplots()
    for label, (fpr, tpr) in curves.items():
        ax.plot(*_thin(np.asarray(fpr), np.asarray(tpr)), label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _finish(fig, path)


def plot_pro(
    fpr: np.ndarray,
    pro: np.ndarray,
    path: str | os.PathLike | None = None,
    *,
    fpr_limit: float = 0.3,
    aupro: float | None = None,
    title: str = "PRO (test split)",
) -> np.ndarray:
    """PRO against FPR up to `fpr_limit` (the integrated part) with the limit marked."""
    fig = Figure(figsize=(4.5, 4.2), dpi=100)
    ax = fig.subplots()
    label = "PRO" if aupro is None else f"AUPRO@{fpr_limit:g} = {aupro:.3f}"
    ax.plot(*_thin(np.asarray(fpr), np.asarray(pro)), label=label)
    ax.axvline(fpr_limit, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlim=(0, min(1.0, 2 * fpr_limit)), ylim=(0, 1.01), xlabel="false positive rate",
           ylabel="per-region overlap", title=title)
    ax.legend(loc="lower right", fontsize=8)
    return _finish(fig, path)


def plot_score_histogram(
    normal_scores: Sequence[float],
    anomalous_scores: Sequence[float],
    threshold: float | None,
    path: str | os.PathLike | None = None,
    *,
    title: str = "image scores (test split)",
) -> np.ndarray:
    """Histograms of normal and anomalous scores with the threshold as a vertical line."""
    normal = np.asarray(normal_scores, dtype=np.float64).ravel()
    anomalous = np.asarray(anomalous_scores, dtype=np.float64).ravel()
    both = np.concatenate([normal, anomalous])
    if both.size == 0:
        raise ValueError("plot_score_histogram: no scores given")
    lo, hi = float(both.min()), float(both.max())
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
    fig = Figure(figsize=(6.0, 3.6), dpi=100)
    ax = fig.subplots()
    if normal.size:
        ax.hist(normal, bins=bins, alpha=0.6, color="tab:blue", label=f"normal ({normal.size})")
    if anomalous.size:
        ax.hist(anomalous, bins=bins, alpha=0.6, color="tab:red", label=f"anomalous ({anomalous.size})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set(xlabel="score", ylabel="images", title=title)
    ax.legend(fontsize=8)
    return _finish(fig, path)
