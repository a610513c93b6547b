"""Image scores other than the map's mean, from one trained run's own anomaly maps (no training).

  python launch.py --config=configs/quickstart.py:long --workdir=runs/long    # train once
  python -m benchmarks.funetgan_image_scores --workdir=runs/long

Asks whether the image AUROC of the f-UNetGAN demo runs is limited by how the image score
sums up the map (the mean, config.eval.image_score='mean_map') or by the map itself. The
run's score function (its checkpoint, refinement and smoothing, as --mode=eval) maps the
test split, the validation split and the training split; each reduction below then gets the
image AUROC over all test images and per defect type (that type's images against every
normal one):
  - mean, max, and the mean of the top q of the pixels (q = 0.5% ... 20%): a small bright
    region weighs more the smaller q;
  - the same after subtracting the per-pixel mean map of the training crops (cancels what
    every map has at one place, such as the generator's border artefact), and after
    standardising each pixel by the training crops' per-pixel mean and spread.
The training crops are the ones the networks learned from (their maps are lower than on
unseen crops); the validation split is too small (12 crops) for per-pixel statistics.
Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import os
import platform

import jax
import numpy as np
from anomaly_core import data as data_lib
from anomaly_core.evaluation import metrics as metrics_lib
from anomaly_core.evaluation import evaluation
from benchmarks.common import command_line, trained_run, write_results

TOP_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
SPREAD_FLOOR = 1e-3  # added to the per-pixel spread: a pixel that never varies must not dominate


def top_fraction_mean(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Mean of the largest max(1, round(fraction * H * W)) values of each map (N, H, W) -> (N,)."""
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(round(fraction * flat.shape[1])))
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def reductions(maps: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """Image scores (N,) of test maps (N, H, W) by every reduction of the module docstring;
    `reference` (M, H, W): the training crops' maps."""
    mu, sd = reference.mean(axis=0), reference.std(axis=0) + SPREAD_FLOOR
    out = {}
    for label, m in (("map", maps), ("map - training mean", maps - mu),
                     ("(map - training mean) / sd", (maps - mu) / sd)):
        out[f"{label}: mean"] = m.mean(axis=(1, 2))
        out[f"{label}: max"] = m.max(axis=(1, 2))
        for q in TOP_FRACTIONS:
            out[f"{label}: top {q:.1%}"] = top_fraction_mean(m, q)
    return out


def main() -> None:
    args, detector, config, _ = trained_run(__doc__, "funetgan_image_scores")
    splits = data_lib.Splits(config.data)
    scored = {}
    with jax.set_mesh(detector.mesh):
        for name in ("train", "test"):
            scored[name] = evaluation.score_split(detector.score_fn, config.data, splits[name], detector.mesh,
                                                  batch_size=int(config.eval.batch_size))
    test = scored["test"]
    labels = test.labels
    defects = [r.defect for r in test.records]
    types = sorted({d for d, label in zip(defects, labels) if label == 1})  # per_defect_metrics' order
    rows = []
    for name, scores in reductions(test.anomaly_maps, scored["train"].anomaly_maps).items():
        per_type = metrics_lib.per_defect_metrics(scores, labels, defects)
        row = {"score": name, "image_auroc": round(metrics_lib.roc_auc(scores, labels), 3)}
        row.update({t: round(per_type[t]["image_auroc"], 3) for t in types})
        rows.append(row)
        print(row, flush=True)
    meta = {"machine": f"{platform.machine()} {os.cpu_count()} CPU cores", "jax": jax.__version__,
            "run": os.path.abspath(args.workdir), "checkpoint": f"step {detector.step} ({detector.checkpoint})",
            "seed": int(config.seed), "test images": f"{len(labels)} ({int(labels.sum())} defective)",
            "training crops": len(scored["train"].labels)}
    print(write_results(args.out, title="f-UNetGAN: image scores from the run's own anomaly maps",
                        command=command_line(), meta=meta, rows=rows,
                        columns=(("score", "image score"), ("image_auroc", "image AUROC"),
                                 *((t, t) for t in types))))


if __name__ == "__main__":
    main()
