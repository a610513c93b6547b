"""Scoring whole splits with a method's score function; evaluation and predict outputs.

A method supplies `score_fn(batch) -> {'image_score' (B,), 'anomaly_map' (B,H,W),
'reconstruction' (B,H,W,C)}` (jitted, batch sharded over the mesh). This module runs it
over padded evaluation batches so every example is scored exactly once, fits thresholds on
the validation split only, computes the metrics and writes the outputs: an evaluation into
`<workdir>/eval/`, a prediction into `<workdir>/predict/`, each staged and swapped in whole
(`output_folder`), so either folder always holds the files of one complete run.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
import logging
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from anomaly_core import data as data_lib
from anomaly_core import settings
from anomaly_core.evaluation import metrics as metrics_lib
from anomaly_core.evaluation import baseline, output_folder, report, visualise
from anomaly_core.training import parallel

log = logging.getLogger(__name__)

PREDICT_LOG_EVERY = 256  # images between predict's progress lines
EVAL_FOLDER = "eval"  # <workdir>/eval/: metrics.json, scores.csv, panels/, curves


def eval_rules() -> list[settings.Rule]:
    """The constraints of the shared `config.eval` settings (a method's own, e.g. image_score,
    are in its `Method.settings`)."""
    from anomaly_core.evaluation.thresholds import RULES

    return [
        settings.integer("config.eval.batch_size", 1),
        settings.integer("config.eval.max_panels", 0),
        settings.integer("config.eval.predict_heatmaps", -1),
        settings.choice("config.eval.threshold_rule", RULES),
        settings.number("config.eval.aupro_fpr_limit", 0, 1, low_open=True),
        settings.boolean("config.eval.baseline"),
        settings.Rule("config.eval.checkpoint", "'best' (lowest validation metric, where recorded), 'latest' or a "
                      "step number such as '600'",
                      lambda v: isinstance(v, str) and (v in ("best", "latest") or v.isdigit())),
        settings.number("config.eval.smoothing_sigma", 0),
    ]


def check_splits(config, splits: data_lib.Splits) -> None:
    """Before training: the evaluation can run on the configured data. The test split must
    exist and hold normal and anomalous images (image AUROC needs both); with masks, the
    anomalous images' masks must not all be empty at the model resolution (pixel metrics
    need defect pixels); the threshold rule must fit the validation split. Listing checked
    every test image and mask; this reads the masks only (`data.eval_masks`: no test image is
    decoded before the evaluation's one pass). ValueError naming the split and the setting."""
    test = splits["test"]
    where = f"the test split of config.data (source {config.data.source!r})"
    n_anomalous = sum(int(r.label) == 1 for r in test.records)
    if len(test) == 0:
        raise ValueError(f"{where} is empty: evaluation needs normal and anomalous test images")
    if n_anomalous in (0, len(test)):
        kind = "anomalous" if n_anomalous else "normal"
        raise ValueError(f"{where} holds {len(test)} image(s), all {kind}: image AUROC needs normal and "
                         "anomalous test images (check config.data.root and the test folder's class folders)")
    if test.has_masks:
        defect_pixels = 0
        for _, mask in data_lib.eval_masks(config.data, test):
            defect_pixels += int(mask.sum())
        if defect_pixels == 0:
            raise ValueError(f"{where}: every ground-truth mask is empty at config.data.image_size="
                             f"{config.data.image_size} (defects thinner than a pixel vanish when resized); "
                             "pixel metrics need defect pixels: raise the image size")
    rule = config.eval.threshold_rule
    if rule in ("f1", "mean_std"):
        val = splits["val"]
        labels = [int(r.label) for r in val.records]
        if len(val) and rule == "f1" and 1 not in labels:
            raise ValueError("config.eval.threshold_rule='f1' needs anomalous validation images; the validation "
                             "split has none (use 'auto' or 'mean_std', or give config.data.val_dir class folders)")
        if len(val) and rule == "mean_std" and 0 not in labels:
            raise ValueError("config.eval.threshold_rule='mean_std' needs normal validation images; the "
                             "validation split has none")


def evaluation_dir(workdir: str) -> str:
    """`<workdir>/eval`: the outputs of the newest complete evaluation."""
    return os.path.join(workdir, EVAL_FOLDER)


def saved_metrics(workdir: str) -> dict[str, Any] | None:
    """The metrics.json of the workdir's newest complete evaluation, or None when there is none.

    Workdirs evaluated by versions before `<workdir>/eval/` have it at the top level."""
    for path in (os.path.join(evaluation_dir(workdir), "metrics.json"), os.path.join(workdir, "metrics.json")):
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    return None

ScoreFn = Callable[[Mapping[str, jax.Array]], Mapping[str, jax.Array]]
PerImageFn = Callable[[np.ndarray], np.ndarray]  # images (B, H, W, C) -> (B, ...)


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
    unreadable: list[str] = dataclasses.field(default_factory=list)  # paths left out: unreadable when scored
    per_image: np.ndarray | None = None  # (N, ...) score_split's `per_image` of each example, e.g. baseline maps
    per_image_s: float = 0.0  # seconds spent in `per_image`


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
    per_image: PerImageFn | None = None,
) -> dict[str, np.ndarray]:
    """Runs `score_fn` over padded batches; returns arrays of the `n` examples in order.

    Images and reconstructions are kept only for the example indices in `keep` (panels).
    'index' holds the indices scored; 'missing' those whose file could not be read any more.
    With `per_image`, 'per_image' holds its rows for the same examples (it is called on each
    batch's valid images, (B', H, W, C) in the configured value range, every example of the
    batch on every process) and 'per_image_s' the seconds spent in it.
    """
    out: dict[str, list] = {k: [] for k in ("index", "image_score", "anomaly_map", "mask", "label")}
    if per_image is not None:
        out["per_image"] = []
    per_image_s = 0.0
    keep_set = set(int(i) for i in keep)
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for local in batches:
        batch = parallel.global_batch(local, mesh)
        res = score_fn(batch)
        valid = gather(batch["valid"]).astype(bool)
        for key, arr in (("index", batch["index"]), ("mask", batch["mask"]), ("label", batch["label"]),
                         ("image_score", res["image_score"]), ("anomaly_map", res["anomaly_map"])):
            out[key].append(gather(arr)[valid])
        if per_image is not None:
            started = time.perf_counter()
            # One process holds the whole batch on the host already; several gather it.
            images = np.asarray(local["image"]) if jax.process_count() == 1 else gather(batch["image"])
            out["per_image"].append(np.asarray(per_image(images[valid])))
            per_image_s += time.perf_counter() - started
        wanted = [j for j, i in enumerate(out["index"][-1]) if int(i) in keep_set]
        if wanted:
            imgs, recs = gather(batch["image"])[valid], gather(res["reconstruction"])[valid]
            for j in wanted:
                kept[int(out["index"][-1][j])] = (imgs[j], recs[j])
    cat = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in out.items()}
    order = np.argsort(cat["index"], kind="stable")
    cat = {k: v[order] for k, v in cat.items()}
    scored = cat["index"].astype(np.int64)
    if len(np.unique(scored)) != len(scored) or not np.isin(scored, np.arange(n)).all():
        raise RuntimeError(f"evaluation scored {len(scored)} examples, expected each of {n} at most once")
    # A record that is not scored could not be read any more (the loader named it; data.pipeline).
    cat["missing"] = np.setdiff1d(np.arange(n), scored)
    if per_image is not None:
        cat["per_image_s"] = per_image_s
    if keep_set:
        order_kept = sorted(kept)
        cat["panel_indices"] = order_kept
        cat["images"] = np.stack([kept[i][0] for i in order_kept]) if kept else None
        cat["reconstructions"] = np.stack([kept[i][1] for i in order_kept]) if kept else None
    return cat


def score_split(
    score_fn: ScoreFn, data_cfg, loaded: data_lib.Split, mesh, *, batch_size: int, max_panels: int = 0,
    per_image: PerImageFn | None = None,
) -> ScoredSplit | None:
    """Scores every example of the split; None when it is empty. `per_image` (see
    `score_batches`) runs on the same decoded images: its rows cover exactly the examples
    scored (a file unreadable when scored is left out of both)."""
    if len(loaded) == 0:
        return None
    batches = data_lib.eval_batches(
        data_cfg, loaded, batch_size=batch_size,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
    keep = report.select_panels(loaded.records, max_panels) if max_panels else ()
    cat = score_batches(score_fn, batches, mesh, n=len(loaded), keep=keep, per_image=per_image)
    scored = [int(i) for i in cat["index"]]
    position = {i: p for p, i in enumerate(scored)}
    panels = cat.get("panel_indices")
    return ScoredSplit(
        split=loaded.name,
        records=[loaded.records[i] for i in scored],
        labels=cat["label"].astype(np.int32),
        image_scores=cat["image_score"].astype(np.float64),
        anomaly_maps=cat["anomaly_map"].astype(np.float32),
        masks=cat["mask"].astype(np.float32) if loaded.has_masks else None,
        images=cat.get("images"),
        reconstructions=cat.get("reconstructions"),
        panel_indices=None if panels is None else [position[i] for i in panels],
        unreadable=[loaded.records[int(i)].path for i in cat["missing"]],
        per_image=cat.get("per_image"),
        per_image_s=float(cat.get("per_image_s", 0.0)),
    )


# <workdir>/eval/timing.json: the wall time of the test split's scoring pass (decoding, scoring,
# panels kept; no compilation when the validation split was scored first with the same batch
# shape), in seconds, less the time spent computing the baseline's maps within it.
TIMING_FILE = "timing.json"


def evaluate(
    score_fn: ScoreFn,
    config,
    workdir: str,
    mesh,
    splits: data_lib.Splits,
    *,
    writer=None,
    step: int = 0,
    checkpoint: str = "latest",
) -> dict[str, Any]:
    """Scores val and test of `splits` (the run's data), fits thresholds on val; writes
    `<workdir>/eval/` (metrics.json, scores.csv, panels/, roc.png, pro.png,
    score_histogram.png) in one swap."""
    ev = config.eval
    val = score_split(score_fn, config.data, splits["val"], mesh, batch_size=ev.batch_size)
    test_split = splits["test"]
    baseline_maps = None
    if ev.baseline:
        # The baseline's maps come from the scoring pass's decoded test images (each decoded
        # once), so they cover the same examples as the method's.
        smoothing_sigma = float(ev.smoothing_sigma)
        mean = baseline.mean_image(config.data, splits["train"], ev.batch_size)
        baseline_maps = functools.partial(baseline.anomaly_maps, mean=mean, smoothing_sigma=smoothing_sigma)
    started = time.perf_counter()  # the scoring program was compiled by the validation pass
    test = score_split(score_fn, config.data, test_split, mesh, batch_size=ev.batch_size,
                       max_panels=ev.max_panels, per_image=baseline_maps)
    test_scoring_s = time.perf_counter() - started - (test.per_image_s if test is not None else 0.0)
    if test is None:
        raise ValueError(f"the test split of config.data (source {config.data.source!r}) is empty")
    unreadable = [*(val.unreadable if val is not None else []), *test.unreadable]
    if val is None:
        log.warning("validation split is empty (config.data.val_fraction=%s): thresholds cannot be fitted "
                    "without touching the test set, so threshold metrics are omitted", config.data.val_fraction)
    results = metrics_lib.evaluate_anomaly_detection(
        test_scores=test.image_scores,
        test_labels=test.labels,
        test_defects=[r.defect for r in test.records],
        test_maps=test.anomaly_maps if test.masks is not None else None,
        test_masks=test.masks,
        val_scores=None if val is None else val.image_scores,
        val_labels=None if val is None else val.labels,
        val_maps=None if (val is None or val.masks is None) else val.anomaly_maps,
        val_masks=None if val is None else val.masks,
        threshold_rule=ev.threshold_rule,
        fpr_limit=ev.aupro_fpr_limit,
    )
    if baseline_maps is not None:
        results["baseline"] = baseline.metrics_of(test.per_image, test.labels, test.masks,
                                                  smoothing_sigma=smoothing_sigma, fpr_limit=ev.aupro_fpr_limit)
    results["evaluation"] = {
        "test_examples": int(len(test.labels)),
        "val_examples": 0 if val is None else int(len(val.labels)),
        "resolution": f"{config.data.image_size}x{config.data.image_size} (model resolution)",
        "image_score": str(ev.image_score),
        "train_steps": int(step),  # the step of the evaluated checkpoint
        "checkpoint": checkpoint,  # how it was selected (config.eval.checkpoint)
        # Files listed at start-up that could not be read when scored (vanished, rewritten).
        "unreadable_files": {"count": len(unreadable), "paths": unreadable},
    }
    if unreadable:
        log.warning("%d listed file(s) could not be read when scored and were left out of the metrics (named "
                    "above; listed in metrics.json): %s", len(unreadable), ", ".join(unreadable[:5]))
    if jax.process_index() == 0:
        thr = results.get("thresholds", {}).get("image", {}).get("value")
        predicted = (test.image_scores > thr).astype(int) if thr is not None else np.full(len(test.labels), -1)
        final = evaluation_dir(workdir)
        result = report.Evaluation(
            metrics=results, records=test.records, image_scores=test.image_scores, predicted_labels=predicted,
            anomaly_maps=test.anomaly_maps, masks=test.masks, images=test.images,
            reconstructions=test.reconstructions, panel_indices=test.panel_indices)
        with output_folder.replacing(final, "<workdir>/eval", keep_unmarked=True) as staging:
            report.write_evaluation(
                staging,
                result,
                max_panels=ev.max_panels,
                value_range=tuple(config.data.value_range),
                pixel_threshold=results.get("thresholds", {}).get("pixel", {}).get("value"),
                writer=writer,
                step=step,
            )
            # Wall time apart from metrics.json, which a resumed run reproduces bit for bit.
            report.write_atomically(os.path.join(staging, TIMING_FILE), json.dumps(
                {"test_examples": int(len(test.labels)), "test_scoring_s": round(test_scoring_s, 3)}).encode())
        log.info("evaluation outputs in %s", final)
    return results


def heatmap_range(pixel_threshold: float | None) -> tuple[float, float] | None:
    """The colour scale of every predict heatmap: 0 to twice the fitted pixel threshold, so
    the threshold sits at the middle of the colour bar and maps of different images compare;
    None (each map its own range) when no pixel threshold was fitted."""
    return None if not pixel_threshold else (0.0, 2.0 * float(pixel_threshold))


def _warn_resized(paths: Sequence[str], size: int, max_pixels: int) -> None:
    """One warning for the images that are not square: resizing to size x size changes
    their aspect ratio (as it did for the training images)."""
    from anomaly_core.data import image_io

    changed = []
    for p in paths:
        w, h = image_io.check_image(p, max_pixels)  # cached from the listing
        if w != h:
            changed.append((p, w, h))
    if changed:
        p, w, h = changed[0]
        log.warning("%d of %d images are not square and were resized to %dx%d without keeping their aspect ratio "
                    "(e.g. %s, %dx%d): crop them to a square first if the defects are thin", len(changed),
                    len(paths), size, size, p, w, h)


def predict(score_fn: ScoreFn, config, workdir: str, input_dir: str, mesh, output: str | None = None) -> str:
    """Scores every image in `input_dir`; writes `output` (default `<workdir>/predict/`):
    predictions.csv (path, score, normalised score = score / threshold, predicted label,
    threshold) and per image (`config.eval.predict_heatmaps`: -1 every image, N the first N,
    0 none) a panel `<stem>_heatmap.png` (input | reconstruction | heatmap on the fixed scale
    `heatmap_range` | predicted defect region; verdict and scores in the title) and the
    binary predicted mask `<stem>_mask.png` (map > pixel threshold, model resolution).

    The outputs are written into a fresh folder that replaces the output folder only once
    complete (`output_folder.replacing`), so it always holds one prediction run (an
    interrupted one leaves the previous); an `output` folder holding files this program did
    not write is refused.
    A progress line is logged every `PREDICT_LOG_EVERY` images. The image threshold comes
    from the run's metrics.json (`saved_metrics`: fitted on validation data at evaluation
    time); without it, scores are written with no predicted label.
    """
    folder = data_lib.load_image_folder(input_dir, config.data)
    if folder.arrays is None:
        _warn_resized(folder.paths, int(config.data.image_size), int(config.data.max_image_pixels))
    final = os.path.abspath(output or os.path.join(workdir, "predict"))
    # Only process 0 writes; an explicit --output that holds a user's files is refused.
    owned = (output_folder.replacing(final, "--output", keep_unmarked=output is None) if jax.process_index() == 0
             else contextlib.nullcontext(""))
    with owned as outdir:
        rows = _predict_into(outdir, score_fn, config, workdir, folder, mesh)
    log.info("scored %d images from %s (%d skipped); outputs in %s", len(rows), input_dir, len(folder.skipped), final)
    return final


def _predict_into(outdir: str, score_fn: ScoreFn, config, workdir: str, folder, mesh) -> list[tuple[str, float, Any]]:
    """predict's scoring and files, written into the staging folder `outdir` (process 0);
    returns the rows of predictions.csv."""
    heatmaps = config.eval.predict_heatmaps  # checked by eval_rules (program.check_config)
    threshold = pixel_threshold = None
    saved = saved_metrics(workdir)
    if saved is not None:
        threshold = saved.get("thresholds", {}).get("image", {}).get("value")
        pixel_threshold = saved.get("thresholds", {}).get("pixel", {}).get("value")
    bs = config.eval.batch_size
    rows = []
    lo, hi = config.data.value_range
    map_range = heatmap_range(pixel_threshold)
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
                if threshold is None:
                    title = f"score {s:.4g} (no threshold fitted: run --mode=eval)"
                else:
                    title = f"{'ANOMALOUS' if pred else 'normal'} | score {s:.4g} = {s / threshold:.2f} x threshold"
                if map_range is None:
                    title += " | heatmap on its own scale"
                visualise.save_png(
                    os.path.join(outdir, f"{stem}_heatmap.png"),
                    visualise.panel(im, rc, m, None, threshold=pixel_threshold, value_range=(lo, hi),
                                    map_range=map_range, title=title),
                )
                if pixel_threshold is not None:
                    visualise.save_png(os.path.join(outdir, f"{stem}_mask.png"),
                                       ((np.asarray(m) > pixel_threshold) * 255).astype(np.uint8))
        if len(rows) // PREDICT_LOG_EVERY > (len(rows) - len(idx)) // PREDICT_LOG_EVERY:
            log.info("predict: %d of %d images scored", len(rows), len(folder.paths))
    if jax.process_index() == 0:
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(["path", "score", "normalised_score", "predicted_label", "threshold"])
        for path, s, pred in rows:
            w.writerow([path, f"{s:.8g}", "" if not threshold else f"{s / threshold:.6g}", pred,
                        "" if threshold is None else f"{threshold:.8g}"])
        report.write_atomically(os.path.join(outdir, "predictions.csv"), text.getvalue().encode("utf-8"))
    return rows
