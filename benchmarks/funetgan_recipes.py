"""f-UNetGAN training recipes on the demo, measured fast: which settings make G learn (issue 12).

  python -m benchmarks.funetgan_recipes                                   # every recipe, ~5 min each
  python -m benchmarks.funetgan_recipes --recipes=quickstart,lr_2e-4
  python -m benchmarks.funetgan_recipes --recipes=quickstart --seeds=0,1,2   # seed spread

Each recipe is configs/quickstart.py with a few overrides (RECIPES). It trains with the
project's own step functions (funetgan_jax.updates.adversarial_step / encoder_step) in a minimal
loop: uniform random training batches with horizontal flips, no checkpoints, no validation,
the final networks scored. That is what makes a recipe cost ~4 minutes on 2 CPU cores instead
of the full program's ~5.5; its numbers differ from the program's (other data order, no
checkpoint selection), so compare recipes with each other, and run the chosen one as
`python launch.py --config=configs/quickstart.py --config.<setting>=<value> ...`.

Per recipe: seconds per adversarial and encoder update, the spread of G's samples at 16
fixed latents (the mean over pixels of their standard deviation; near 0 = every latent draws
the same image), and on the demo's test split (maps smoothed with sigma 1) the image AUROC
(max of the map) and pixel AUROC of the residual map |x - G(E(x))|, of the critic's pixel
output -D_dec(x), and of the quickstart's map (config.eval as configs/quickstart.py sets it:
now the residual of the latent refined by 200 Adam steps; the results recorded in
benchmarks/results/funetgan_recipes*.md were measured when it was the residual plus the
standardised critic term, config.eval.critic_weight 1), beside the no-learning baseline
|x - mean training image|. Sample
and reconstruction grids go to <out>_<recipe>_samples.png / _reconstructions.png.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from anomaly_core import data as data_lib
from benchmarks.common import command_line, machine_info, split_arrays, write_results
from configs import quickstart
from funetgan_jax import networks as fnets
from funetgan_jax import score_fns as fscore
from funetgan_jax import train_state as fstate
from funetgan_jax import updates as fupdates
from funetgan_jax import train as ft

# name -> overrides of configs/quickstart.py (dotted, without 'config.')
RECIPES = {
    "quickstart": {},
    "lr_2e-4": {"train.lr_g": 2e-4, "train.lr_d": 2e-4},  # the quickstart's learning rate before
    "lr_2e-4_betas_0.5": {"train.lr_g": 2e-4, "train.lr_d": 2e-4, "train.betas": (0.5, 0.999)},
    "z_32": {"model.z_dim": 32},  # the quickstart's latent size before
    # U-Net GAN's CutMix: the critic's pixel head learns to find fake rectangles in real images.
    "cutmix": {"train.consistency": "cutmix"},
    "g_ema_0.99": {"train.g_ema_decay": 0.99},  # G's moving average draws and reconstructs
}
SIGMA = 1.0


def _grid(images: np.ndarray, rows: int) -> Image.Image:
    a = np.clip((np.asarray(images, np.float32) + 1) / 2, 0, 1)
    n, h, w, c = a.shape
    a = a[: rows * (n // rows)].reshape(rows, n // rows, h, w, c).transpose(0, 2, 1, 3, 4)
    return Image.fromarray((a.reshape(rows * h, -1, c) * 255).astype(np.uint8))


def _aurocs(maps: np.ndarray, labels: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    m = ndimage.gaussian_filter(np.asarray(maps, np.float64), sigma=(0, SIGMA, SIGMA), mode="reflect", truncate=4.0)
    return round(roc_auc_score(labels, m.max((1, 2))), 3), round(roc_auc_score(masks.ravel(), m.ravel()), 3)


def run_recipe(name: str, overrides: dict, out: str, seed: int = 0) -> dict:
    config = quickstart.get_config()
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = config
        for p in path:
            node = node[p]
        node[last] = value
    t = config.train
    splits = data_lib.Splits(config.data)
    train, _, _ = split_arrays(config.data, splits["train"])
    test, masks, labels = split_arrays(config.data, splits["test"])
    rng = np.random.default_rng(seed)

    def batch(n: int) -> np.ndarray:
        x = train[rng.integers(0, len(train), n)].copy()
        flip = rng.random(n) < 0.5
        x[flip] = x[flip, :, ::-1]
        return x

    state = fstate.init_state(config, jax.random.key(seed))
    adversarial = jax.jit(functools.partial(fupdates.adversarial_step, config))
    encoder = jax.jit(functools.partial(fupdates.encoder_step, config))
    G, D, E = fnets.networks(config)
    z = jax.random.normal(jax.random.key(ft.PROGRESS_SEED), (16, config.model.z_dim), jnp.float32)
    key = jax.random.key(seed + 1)
    times = {}
    for stage, steps, fn, shape in (("adversarial", t.generator_steps, adversarial, (t.n_critic, t.batch_size)),
                                    ("encoder", t.encoder_steps, encoder, (t.batch_size,))):
        for i in range(steps + 1):  # the first call compiles; the others are timed
            if i == 1:
                jax.block_until_ready(state)
                t0 = time.monotonic()
            key, k = jax.random.split(key)
            x = batch(int(np.prod(shape))).reshape(*shape, *train.shape[1:])
            state, _ = fn(state, {"image": jnp.asarray(x)}, k)
        jax.block_until_ready(state)
        times[stage] = (time.monotonic() - t0) / max(steps, 1)
        if stage == "adversarial":
            samples = np.asarray(G.apply(fnets.generator_variables(state), z, train=False))
    g = fnets.generator_variables(state)
    xr = np.asarray(jax.jit(lambda x: G.apply(g, E.apply(state["e"], x, train=False), train=False))(test))
    pixel_logits = np.asarray(jax.jit(lambda x: D.apply(state["d"], x, train=False).pixel_logits)(test))[..., 0]
    _grid(samples, 2).save(f"{out}_{name}_samples.png")
    pick = np.r_[np.flatnonzero(labels == 0)[:4], np.flatnonzero(labels == 1)[::10][:4]]
    _grid(np.concatenate([test[pick], xr[pick]]), 2).save(f"{out}_{name}_reconstructions.png")
    residual = _aurocs(np.abs(test - xr).mean(-1), labels, masks)
    critic = _aurocs(-pixel_logits, labels, masks)
    base = _aurocs(np.abs(test - train.mean(0)).mean(-1), labels, masks)
    config.eval.smoothing_sigma = 0.0  # _aurocs smooths
    shipped = _aurocs(np.asarray(jax.jit(fscore.score_fn(config))(state, {"image": jnp.asarray(test)})["anomaly_map"]),
                      labels, masks)
    return {"recipe": name, "seed": seed, "overrides": json.dumps(overrides), "adversarial_s": round(times["adversarial"], 3),
            "encoder_s": round(times["encoder"], 3), "sample_spread": round(float(samples.std(0).mean()), 3),
            "residual_image": residual[0], "residual_pixel": residual[1], "critic_image": critic[0],
            "critic_pixel": critic[1], "shipped_image": shipped[0], "shipped_pixel": shipped[1],
            "baseline_image": base[0], "baseline_pixel": base[1]}


COLUMNS = (("recipe", "recipe"), ("seed", "seed"), ("overrides", "overrides of configs/quickstart.py"),
           ("adversarial_s", "s / adversarial update"), ("encoder_s", "s / encoder update"),
           ("sample_spread", "spread of G's samples"), ("residual_image", "residual: image AUROC"),
           ("residual_pixel", "residual: pixel AUROC"), ("critic_image", "critic: image AUROC"),
           ("critic_pixel", "critic: pixel AUROC"), ("shipped_image", "quickstart map: image AUROC"),
           ("shipped_pixel", "quickstart map: pixel AUROC"), ("baseline_image", "baseline: image AUROC"),
           ("baseline_pixel", "baseline: pixel AUROC"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"comma list of {sorted(RECIPES)}")
    p.add_argument("--seeds", default="0", help="comma list of integer seeds (initialisation, data order)")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "funetgan_recipes"))
    args = p.parse_args(argv)
    names = args.recipes.split(",")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"--seeds: {args.seeds!r} is not a comma list of integers") from None
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"--recipes: unknown {unknown}; known: {sorted(RECIPES)}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    rows = []
    for name in names:
        for seed in seeds:
            out = args.out if seed == 0 else f"{args.out}_seed{seed}"  # picture names
            rows.append(run_recipe(name, RECIPES[name], out, seed))
            print(json.dumps(rows[-1]), flush=True)
    print(write_results(args.out, title="f-UNetGAN training recipes on the demo (minimal loop, final networks)",
                        command=command_line(), meta=machine_info(), rows=rows, columns=COLUMNS))


if __name__ == "__main__":
    main()
