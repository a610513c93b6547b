"""What a user gets after an evaluation: metrics.json, scores.csv, panels and curves.

Every file is written atomically (temporary name, then os.replace), and metrics.json is
written last: an interrupted evaluation never leaves a half-written metrics.json, and a
metrics.json that exists belongs to a completed set of outputs.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from anomaly_core.evaluation import metrics as metrics_lib
from anomaly_core.evaluation import visualise

__all__ = ["Evaluation", "write_evaluation", "select_panels", "to_json", "write_atomically"]


class Record(Protocol):
    path: Any
    label: int
    defect: Any


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, syncs it, then renames it over `path`."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _json_safe(obj: Any, where: str) -> Any:
    # JSON has no NaN or infinity: NaN -> null, +-inf -> "Infinity" / "-Infinity".
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist(), where)
    if isinstance(obj, np.generic):
        return _json_safe(obj.item(), where)
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        return obj
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"metrics{where}: cannot write a {type(obj).__name__} to metrics.json")


def to_json(metrics: Mapping[str, Any]) -> str:
    """metrics as valid JSON text (NaN -> null, inf -> "Infinity"); raises on unknown types."""
    return json.dumps(_json_safe(metrics, ""), indent=2, allow_nan=False) + "\n"


NAME_LIMIT = 80  # characters of an output name taken from an input name


def _safe_name(text: Any, limit: int = NAME_LIMIT) -> str:
    """A file-name part from any text: [A-Za-z0-9._-] only, at most `limit` characters (a
    longer one is cut and ends with 8 hex digits of its SHA-1, so distinct long names stay
    distinct and every output name stays far below the 255 bytes a file system allows)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "none"
    if len(safe) <= limit:
        return safe
    return f"{safe[:limit - 9]}-{hashlib.sha1(str(text).encode()).hexdigest()[:8]}"


def output_stem(index: int, path: str) -> str:
    """'<index>_<bounded, safe stem of path>': the name part of per-image outputs."""
    return f"{int(index):05d}_{_safe_name(os.path.splitext(os.path.basename(os.fspath(path)))[0])}"


def select_panels(records: Sequence[Record], max_panels: int) -> list[int]:
    """Up to max_panels record indices, taken round-robin over defect types in record order."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(str(r.defect), []).append(i)
    picked: list[int] = []
    queues = list(groups.values())
    depth = 0
    while len(picked) < max_panels and any(depth < len(q) for q in queues):
        picked += [q[depth] for q in queues if depth < len(q)][: max_panels - len(picked)]
        depth += 1
    return sorted(picked)


def _scores_csv(records, scores: np.ndarray, predicted: np.ndarray) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "defect", "score", "predicted_label"])
    for r, s, p in zip(records, scores, predicted):
        # A negative predicted label means "no threshold was fitted": left empty.
        w.writerow([os.fspath(r.path), int(r.label), "" if r.defect is None else str(r.defect),
                    repr(float(s)), "" if p < 0 else int(p)])
    return buf.getvalue().encode()


@dataclasses.dataclass
class Evaluation:
    """What one evaluation of a test split produced, for `write_evaluation`.

    metrics: the dict of `metrics.evaluate_anomaly_detection` (extra keys welcome).
    records: the test records (with .path, .label, .defect), in score order.
    image_scores, predicted_labels: (N,) per record; a predicted label < 0 means none.
    anomaly_maps, masks: (N, H, W) for every record (curves and panels); masks {0, 1}.
    images, reconstructions: (P, H, W, C) for the panel subset only: images[i] is record
      panel_indices[i] (default: the first P records). Needs anomaly_maps.
    """

    metrics: Mapping[str, Any]
    records: Sequence[Record]
    image_scores: Any
    predicted_labels: Any
    anomaly_maps: Any = None
    masks: Any = None
    images: Any = None
    reconstructions: Any = None
    panel_indices: Sequence[int] | None = None


def write_evaluation(
    outdir: str | os.PathLike,
    result: Evaluation,
    *,
    max_panels: int = 32,
    value_range: tuple[float, float] | None = None,
    pixel_threshold: float | None = None,
    writer=None,
    step: int = 0,
    writer_panels: int = 4,
) -> dict[str, str]:
    """Writes the evaluation outputs of docs/METHODS.md 4 into `outdir`.

    Args:
      result: the evaluation (its metrics, per-record scores, maps and panel images).
      max_panels: cap on panels/<index>_<defect>_<stem>.png files.
      value_range: image value range for the panels ([0, 1] or [-1, 1]; None infers).
      pixel_threshold: outlined on the panels; default metrics['thresholds']['pixel'].
      writer: optional clu MetricWriter; gets the scalars and `writer_panels` images.
    Returns name -> path of every file written.
    """
    metrics, records, images, reconstructions = result.metrics, result.records, result.images, result.reconstructions
    image_scores, predicted_labels = result.image_scores, result.predicted_labels
    anomaly_maps, masks, panel_indices = result.anomaly_maps, result.masks, result.panel_indices
    out = Path(outdir)
    n = len(records)
    scores = np.asarray(image_scores, dtype=np.float64).reshape(-1)
    predicted = np.asarray(predicted_labels).reshape(-1).astype(np.int64)
    if scores.size != n or predicted.size != n:
        raise ValueError(f"write_evaluation: {n} records but {scores.size} scores and "
                         f"{predicted.size} predicted labels")
    labels = np.array([int(r.label) for r in records], dtype=np.int64)
    maps = None if anomaly_maps is None else np.asarray(anomaly_maps)
    gt = None if masks is None else np.asarray(masks)
    if maps is not None and (maps.ndim != 3 or maps.shape[0] != n):
        raise ValueError(f"write_evaluation: anomaly_maps must be (N={n}, H, W); got {maps.shape}")
    if gt is not None and (maps is None or gt.shape != maps.shape):
        raise ValueError("write_evaluation: masks need anomaly_maps of the same (N, H, W) shape; got "
                         f"{gt.shape} and {None if maps is None else maps.shape}")
    thresholds = metrics.get("thresholds") or {}
    image_threshold = (thresholds.get("image") or {}).get("value")
    if pixel_threshold is None:
        pixel_threshold = (thresholds.get("pixel") or {}).get("value")
    json_text = to_json(metrics)  # fail on unserialisable metrics before touching any file

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    write_atomically(out / "scores.csv", _scores_csv(records, scores, predicted))
    written["scores.csv"] = str(out / "scores.csv")

    tb_images: dict[str, np.ndarray] = {}
    if images is not None:
        if maps is None:
            raise ValueError("write_evaluation: panels need anomaly_maps for the records")
        idx = list(range(len(images))) if panel_indices is None else [int(i) for i in panel_indices]
        if len(idx) != len(images) or (reconstructions is not None and len(reconstructions) != len(images)):
            raise ValueError(f"write_evaluation: {len(images)} images, "
                             f"{None if reconstructions is None else len(reconstructions)} reconstructions "
                             f"and {len(idx)} panel indices must match")
        (out / "panels").mkdir(exist_ok=True)
        map_range = (float(maps.min()), float(maps.max()))  # one colour scale for every panel
        for j, i in enumerate(idx[:max_panels]):
            r = records[i]
            pred = "none" if predicted[i] < 0 else str(predicted[i])
            rgb = visualise.panel(
                images[j], None if reconstructions is None else reconstructions[j], maps[i],
                None if gt is None else gt[i], threshold=pixel_threshold, value_range=value_range,
                map_range=map_range,
                title=f"{r.defect} | score {scores[i]:.4g} | label {labels[i]} | predicted {pred}",
            )
            name = f"{i:04d}_{_safe_name(r.defect)}_{_safe_name(Path(os.fspath(r.path)).stem)}.png"
            visualise.save_png(out / "panels" / name, rgb)
            written[f"panels/{name}"] = str(out / "panels" / name)
            if j < writer_panels:
                tb_images[f"panels/{Path(name).stem}"] = rgb[None]

    has_both = 0 < labels.sum() < n
    if has_both:
        curves = {f"image score (AUROC {metrics_lib.roc_auc(scores, labels):.3f})":
                  metrics_lib.roc_curve(scores, labels)[:2]}
        if maps is not None:
            map_max = maps.reshape(n, -1).max(axis=1)
            curves[f"image, map max (AUROC {metrics_lib.roc_auc(map_max, labels):.3f})"] = \
                metrics_lib.roc_curve(map_max, labels)[:2]
        if gt is not None and np.any(gt) and not np.all(gt):
            fpr, tpr, _ = metrics_lib.roc_curve(maps, gt, name="pixel ROC (test split)")
            curves[f"pixel (AUROC {np.trapezoid(tpr, fpr):.3f})"] = (fpr, tpr)
        tb_images["curves/roc"] = visualise.plot_roc(curves, out / "roc.png")[None]
        written["roc.png"] = str(out / "roc.png")
    if gt is not None and np.any(gt) and not np.all(gt):
        limit = float((metrics.get("protocol") or {}).get("aupro_fpr_limit", 0.3))
        fpr, pro = metrics_lib.pro_curve(maps, gt, name="PRO curve (test split)")
        aupro = (metrics.get("scalars") or {}).get("pixel_aupro")
        tb_images["curves/pro"] = visualise.plot_pro(fpr, pro, out / "pro.png", fpr_limit=limit,
                                                     aupro=aupro)[None]
        written["pro.png"] = str(out / "pro.png")
    tb_images["curves/score_histogram"] = visualise.plot_score_histogram(
        scores[labels == 0], scores[labels == 1], image_threshold, out / "score_histogram.png")[None]
    written["score_histogram.png"] = str(out / "score_histogram.png")

    if writer is not None:
        scalars = {f"eval/{k}": v for k, v in (metrics.get("scalars") or {}).items()
                   if isinstance(v, (int, float, np.number)) and np.isfinite(v)}
        writer.write_scalars(step, scalars)
        writer.write_images(step, tb_images)
        writer.flush()

    write_atomically(out / "metrics.json", json_text.encode())
    written["metrics.json"] = str(out / "metrics.json")
    return written
