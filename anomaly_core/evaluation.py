"""Scoring whole splits with a method's score function; evaluation and predict outputs.

A method supplies `score_fn(batch) -> {'image_score' (B,), 'anomaly_map' (B,H,W),
'reconstruction' (B,H,W,C)}` (jitted, batch sharded over the mesh). This module runs it
over padded evaluation batches so every example is scored exactly once, fits thresholds on
the validation split only (EVALUATION.md), computes the metrics and writes the outputs.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from anomaly_core import data as data_lib
from anomaly_core import metrics as metrics_lib
from anomaly_core import baseline, parallel, report, visualise

log = logging.getLogger(__name__)

PREDICT_LOG_EVERY = 256  # images between predict's progress lines

ScoreFn = Callable[[Mapping[str, jax.Array]], Mapping[str, jax.Array]]


@dataclasses.dataclass
class ScoredSplit:
    """Scores of every example of one split, in record order."""

    split: str
    records: list
    labels: np.ndarray  # (N,) int
    image_scores: np.ndarray  # (N,)
    anomaly_maps: np.ndarray  # (N, H, W)
    masks: np.ndarray | None  # (N, H, W) or None when the source has no masks
    images: np.ndarray | None = None  # (P, H, W, C) first P examples, for panels
    reconstructions: np.ndarray | None = None
    panel_indices: list[int] | None = None  # record indices of `images`


def gather(x: jax.Array) -> np.ndarray:
    """The whole (batch-sharded) array on every process, as numpy."""
    if jax.process_count() > 1:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def score_batches(
    score_fn: ScoreFn,
    batches,
    mesh: jax.sharding.Mesh,
    *,
    n: int,
    keep: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """Runs `score_fn` over padded batches; returns arrays of the `n` examples in order.

    Images and reconstructions are kept only for the example indices in `keep` (panels).
    """
    out: dict[str, list] = {k: [] for k in ("index", "image_score", "anomaly_map", "mask", "label")}
    keep_set = set(int(i) for i in keep)
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for local in batches:
        batch = parallel.global_batch(local, mesh)
        res = score_fn(batch)
        valid = gather(batch["valid"]).astype(bool)
        for key, arr in (("index", batch["index"]), ("mask", batch["mask"]), ("label", batch["label"]),
                         ("image_score", res["image_score"]), ("anomaly_map", res["anomaly_map"])):
            out[key].append(gather(arr)[valid])
        wanted = [j for j, i in enumerate(out["index"][-1]) if int(i) in keep_set]
        if wanted:
            imgs, recs = gather(batch["image"])[valid], gather(res["reconstruction"])[valid]
            for j in wanted:
                kept[int(out["index"][-1][j])] = (imgs[j], recs[j])
    cat = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in out.items()}
    order = np.argsort(cat["index"], kind="stable")
    cat = {k: v[order] for k, v in cat.items()}
    if not np.array_equal(cat["index"], np.arange(n)):
        raise RuntimeError(f"evaluation scored {len(cat['index'])} examples, expected each of {n} exactly once")
    if keep_set:
        order_kept = sorted(kept)
        cat["panel_indices"] = order_kept
        cat["images"] = np.stack([kept[i][0] for i in order_kept]) if kept else None
        cat["reconstructions"] = np.stack([kept[i][1] for i in order_kept]) if kept else None
    return cat


def score_split(
    score_fn: ScoreFn, data_cfg, split: str | data_lib.Split, mesh, *, batch_size: int, max_panels: int = 0
) -> ScoredSplit | None:
    """Scores every example of `split` ('val' | 'test' or a loaded Split); None when it is empty."""
    loaded = data_lib.load_split(data_cfg, split) if isinstance(split, str) else split
    if len(loaded) == 0:
        return None
    batches = data_lib.eval_batches(
        data_cfg, loaded, batch_size=batch_size,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
    keep = report.select_panels(loaded.records, max_panels) if max_panels else ()
    cat = score_batches(score_fn, batches, mesh, n=len(loaded), keep=keep)
    return ScoredSplit(
        split=loaded.name,
        records=list(loaded.records),
        labels=cat["label"].astype(np.int32),
        image_scores=cat["image_score"].astype(np.float64),
        anomaly_maps=cat["anomaly_map"].astype(np.float32),
        masks=cat["mask"].astype(np.float32) if loaded.has_masks else None,
        images=cat.get("images"),
        reconstructions=cat.get("reconstructions"),
        panel_indices=cat.get("panel_indices"),
    )


def evaluate(
    score_fn: ScoreFn,
    config,
    workdir: str,
    mesh,
    *,
    writer=None,
    step: int = 0,
) -> dict[str, Any]:
    """Scores val and test, fits thresholds on val, writes metrics.json, scores.csv, images."""
    ev = config.eval
    val = score_split(score_fn, config.data, "val", mesh, batch_size=ev.batch_size)
    test_split = data_lib.load_split(config.data, "test")
    test = score_split(score_fn, config.data, test_split, mesh, batch_size=ev.batch_size,
                       max_panels=ev.max_panels)
    if test is None:
        raise ValueError(f"the test split of config.data (source {config.data.source!r}) is empty")
    if val is None:
        log.warning("validation split is empty (config.data.val_fraction=%s): thresholds cannot be fitted "
                    "without touching the test set, so threshold metrics are omitted", config.data.val_fraction)
    results = metrics_lib.evaluate_anomaly_detection(
        test_scores=test.image_scores,
        test_labels=test.labels,
        test_maps=test.anomaly_maps if test.masks is not None else None,
        test_masks=test.masks,
        val_scores=None if val is None else val.image_scores,
        val_labels=None if val is None else val.labels,
        val_maps=None if (val is None or val.masks is None) else val.anomaly_maps,
        val_masks=None if val is None else val.masks,
        threshold_rule=ev.threshold_rule,
        fpr_limit=ev.aupro_fpr_limit,
    )
    if ev.get("baseline", True):
        results["baseline"] = baseline.evaluate(
            config.data, test_split, smoothing_sigma=float(ev.get("smoothing_sigma", 0.0)),
            fpr_limit=ev.aupro_fpr_limit, batch_size=ev.batch_size)
    results["evaluation"] = {
        "test_examples": int(len(test.labels)),
        "val_examples": 0 if val is None else int(len(val.labels)),
        "resolution": f"{config.data.image_size}x{config.data.image_size} (model resolution)",
        "image_score": str(ev.get("image_score", "method default")),
        "train_steps": int(step),
    }
    if jax.process_index() == 0:
        thr = results.get("thresholds", {}).get("image", {}).get("value")
        predicted = (test.image_scores > thr).astype(int) if thr is not None else np.full(len(test.labels), -1)
        report.write_evaluation(
            workdir,
            metrics=results,
            records=test.records,
            image_scores=test.image_scores,
            predicted_labels=predicted,
            images=test.images,
            reconstructions=test.reconstructions,
            panel_indices=test.panel_indices,
            anomaly_maps=test.anomaly_maps,
            masks=test.masks,
            max_panels=ev.max_panels,
            value_range=tuple(config.data.value_range),
            pixel_threshold=results.get("thresholds", {}).get("pixel", {}).get("value"),
            writer=writer,
            step=step,
        )
    return results


def predict(score_fn: ScoreFn, config, workdir: str, input_dir: str, mesh) -> str:
    """Scores every image in `input_dir`; writes `<workdir>/predict/`: predictions.csv and
    heatmaps (`config.eval.predict_heatmaps`: -1 every image, N the first N, 0 none).

    The outputs are written into a fresh folder that replaces `predict/` only once complete,
    so the folder always holds one prediction run (an interrupted one leaves the previous).
    A progress line is logged every `PREDICT_LOG_EVERY` images. The image threshold comes
    from `<workdir>/metrics.json` (fitted on validation data at evaluation time); without
    it, scores are written with no predicted label.
    """
    heatmaps = config.eval.get("predict_heatmaps", -1)
    if isinstance(heatmaps, bool) or not isinstance(heatmaps, int) or heatmaps < -1:
        raise ValueError(f"config.eval.predict_heatmaps={heatmaps!r}: -1 (every image), 0 (none) or a count N")
    folder = data_lib.load_image_folder(input_dir, config.data)
    final = os.path.join(workdir, "predict")
    outdir = f"{final}.partial-{os.getpid()}"
    if jax.process_index() == 0:
        shutil.rmtree(outdir, ignore_errors=True)
        os.makedirs(outdir)
    threshold = pixel_threshold = None
    metrics_path = os.path.join(workdir, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            saved = json.load(f)
        threshold = saved.get("thresholds", {}).get("image", {}).get("value")
        pixel_threshold = saved.get("thresholds", {}).get("pixel", {}).get("value")
    bs = config.eval.batch_size
    rows = []
    lo, hi = config.data.value_range
    for local in folder.batches(bs, process_index=jax.process_index(), process_count=jax.process_count()):
        batch = parallel.global_batch(local, mesh)
        res = score_fn(batch)
        valid = gather(batch["valid"]).astype(bool)
        idx = gather(batch["index"])[valid]
        scores = gather(res["image_score"])[valid]
        maps = gather(res["anomaly_map"])[valid]
        imgs = gather(batch["image"])[valid]
        recs = gather(res["reconstruction"])[valid]
        for i, s, m, im, rc in zip(idx, scores, maps, imgs, recs):
            path = folder.paths[int(i)]
            stem = report.output_stem(int(i), path)
            pred = "" if threshold is None else int(s > threshold)
            rows.append((path, float(s), pred))
            if jax.process_index() == 0 and (heatmaps < 0 or len(rows) <= heatmaps):
                visualise.save_png(
                    os.path.join(outdir, f"{stem}_heatmap.png"),
                    visualise.panel(im, rc, m, None, threshold=pixel_threshold, value_range=(lo, hi),
                                    title=f"score {s:.4g}"),
                )
        if len(rows) // PREDICT_LOG_EVERY > (len(rows) - len(idx)) // PREDICT_LOG_EVERY:
            log.info("predict: %d of %d images scored", len(rows), len(folder.paths))
    if jax.process_index() == 0:
        csv_path = os.path.join(outdir, "predictions.csv")
        tmp = csv_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "score", "predicted_label", "threshold"])
            for path, s, pred in rows:
                w.writerow([path, f"{s:.8g}", pred, "" if threshold is None else f"{threshold:.8g}"])
        os.replace(tmp, csv_path)
        # Swap the complete folder in; the previous run's folder is removed only after.
        old = f"{final}.old-{os.getpid()}"
        if os.path.exists(final):
            os.rename(final, old)
        os.rename(outdir, final)
        shutil.rmtree(old, ignore_errors=True)
    log.info("scored %d images from %s (%d skipped); outputs in %s", len(rows), input_dir, len(folder.skipped), final)
    return final
