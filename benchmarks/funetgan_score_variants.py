"""Anomaly maps other than the shipped one, on one trained f-UNetGAN run (no training).

  python launch.py --config=configs/quickstart.py --workdir=runs/quickstart      # train once
  python -m benchmarks.funetgan_score_variants --workdir=runs/quickstart

Asks whether the f-UNetGAN quickstart's detection is limited by its score or by its
networks (issue 12): on the run's selected checkpoint and the demo's test split, each map
below gets the image AUROC of its mean and of its maximum and the pixel AUROC (maps
smoothed as config.eval.smoothing_sigma):
  - the residual |x - G(E(x))| (mean over channels);
  - that residual after refining z = E(x) by Adam on ||x - G(z)||^2 (AnoGAN's latent search,
    started from the encoder);
  - the critic's per-pixel output -D_dec(x), and its change D_dec(G(E(x))) - D_dec(x);
  - the critic's two-sided deviation |D_dec(x) - mean| / sd (moments over the training split,
    fstats.fill_map_stats),
    and the residual plus the critic term, one-sided (config.eval.critic_weight 1 with kappa 0)
    and two-sided, and the last refined residual plus the one-sided term;
  - a Gaussian over the critic's last per-pixel features of the training images
    (Mahalanobis distance per pixel);
  - two no-learning references: |x - mean training image| (the baseline every evaluation
    reports) and a Gaussian over the training images' pixel colours.
Writes <out>.json and <out>.md.
"""
from __future__ import annotations

import functools
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from anomaly_core import data as data_lib
from benchmarks.common import command_line, split_arrays, trained_run, write_results
from funetgan_jax import scoring
from funetgan_jax import map_statistics as fstats
from funetgan_jax import networks as fnets

REFINEMENTS = ((50, 0.2), (75, 0.13), (100, 0.1), (200, 0.05))  # (Adam steps, learning rate); the last also gets the critic term


def _gaussian_distance(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-pixel Mahalanobis distance of test (N, H, W, C) to a Gaussian over all train pixels."""
    flat = train.reshape(-1, train.shape[-1]).astype(np.float64)
    inv = np.linalg.inv(np.cov(flat.T) + 1e-6 * np.eye(flat.shape[1]))
    d = test.astype(np.float64) - flat.mean(0)
    return np.sqrt(np.einsum("nhwc,cd,nhwd->nhw", d, inv, d))


def main() -> None:
    args, detector, config, state = trained_run(__doc__, "funetgan_score_variants")
    G, D, E = fnets.networks(config)
    g = fnets.generator_variables(state)
    splits = data_lib.Splits(config.data)
    # The run's encoder stage gathers the map statistics only when it scores with the critic term.
    state = fstats.fill_map_stats(config, state, splits["train"])
    x, masks, labels = split_arrays(config.data, splits["test"])
    train, _, _ = split_arrays(config.data, splits["train"])
    sigma = float(config.eval.smoothing_sigma)

    generate = jax.jit(lambda z: G.apply(g, z, train=False))
    encode = jax.jit(lambda x: E.apply(state["e"], x, train=False))
    critic = jax.jit(lambda x: D.apply(state["d"], x, train=False, return_features=True))

    def refine(z, steps, lr):
        return jax.jit(functools.partial(scoring.refine_latent, generate, steps=steps, lr=lr))(x, z)

    z = encode(x)
    xr = np.asarray(generate(z))
    out_x, out_r, out_t = critic(x), critic(jnp.asarray(xr)), critic(train)
    residual = np.abs(x - xr).mean(-1)
    maps = {"residual abs(x - G(E(x)))": residual}
    for steps, lr in REFINEMENTS:
        t0 = time.monotonic()
        refined = np.asarray(generate(refine(z, steps, lr)))
        maps[f"residual after {steps} Adam steps on z (lr {lr}; {time.monotonic() - t0:.0f} s)"] = (
            np.abs(x - refined).mean(-1))
    maps["critic pixel output -D_dec(x)"] = -np.asarray(out_x[1])[..., 0]
    maps["critic pixel output change D_dec(G(E(x))) - D_dec(x)"] = np.asarray(out_r[1] - out_x[1])[..., 0]
    # The critic term as config.eval.critic_weight 1 adds it, and two-sided: a pixel whose
    # logit is far from the training pixels' mean in EITHER direction (a short GAN run's
    # critic can rank defects as more real than normal texture; docs/TRAINING.md section 9).
    term = np.asarray(scoring.critic_map(out_x[1], state["map_stats"], 1.0))
    maps["critic two-sided abs(D_dec(x) - training mean) / sd"] = np.abs(term)
    maps["residual + critic term (the map of eval.critic_weight 1, kappa 0)"] = residual + term
    maps["residual + two-sided critic term"] = residual + np.abs(term)
    maps[f"residual after {steps} Adam steps on z + critic term"] = np.abs(x - refined).mean(-1) + term
    maps["Gaussian over the critic's pixel features"] = _gaussian_distance(np.asarray(out_t[3]), np.asarray(out_x[3]))
    maps["no learning: abs(x - mean training image)"] = np.abs(x - train.mean(0)).mean(-1)
    maps["no learning: Gaussian over training pixel colours"] = _gaussian_distance(train, x)

    rows = []
    for name, m in maps.items():
        m = np.asarray(m, np.float64)
        if sigma > 0:
            m = ndimage.gaussian_filter(m, sigma=(0, sigma, sigma), mode="reflect", truncate=4.0)
        rows.append({"map": name, "image_auroc_mean": round(roc_auc_score(labels, m.mean((1, 2))), 3),
                     "image_auroc_max": round(roc_auc_score(labels, m.max((1, 2))), 3),
                     "pixel_auroc": round(roc_auc_score(masks.ravel(), m.ravel()), 3)})
        print(rows[-1], flush=True)
    meta = {"machine": f"{platform.machine()} {os.cpu_count()} CPU cores", "jax": jax.__version__,
            "run": os.path.abspath(args.workdir), "checkpoint": f"step {detector.step} ({detector.checkpoint})",
            "test images": f"{len(labels)} ({int(labels.sum())} defective)"}
    print(write_results(args.out, title="f-UNetGAN quickstart: other anomaly maps on the same checkpoint",
                        command=command_line(), meta=meta, rows=rows,
                        columns=(("map", "map"), ("image_auroc_mean", "image AUROC (mean of map)"),
                                 ("image_auroc_max", "image AUROC (max of map)"), ("pixel_auroc", "pixel AUROC"))))


if __name__ == "__main__":
    main()
