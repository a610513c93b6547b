"""How far from 1-Lipschitz the f-UNetGAN critic starts, per head, for each training-dynamics setting.

  python -m benchmarks.critic_conditioning            # demo data, 64x64, width 4 (about 2 min on 2 CPU cores)

For the settings that decide the critic's scale (config.model.d_norm, config.model.d_global_pool,
config.train.pixel_reduction, config.model.generator_output with its value range) this
initialises G and D from the quickstart config and reports the mean per-sample norm of
d D_head / d x on real demo images, on G's first samples (G in training mode, as the
training step draws them) and on the WGAN-GP interpolates between them; the penalty
each head starts with is about (norm - 1)^2. Nothing is trained.
"""
from __future__ import annotations

import argparse
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_core import data as data_lib
from benchmarks import common
from configs.quickstart import get_config
from funetgan_jax import losses
from funetgan_jax import networks as fnets
from funetgan_jax import train_state as fstate

MUTABLE = ("batch_stats", "spectral")


def input_gradient_norms(config: Any, real: np.ndarray, seed: int = 0) -> dict[str, float]:
    """{'<head>_<real|fake|interp>': mean_b ||d head(x_b) / d x_b||} at initialisation."""
    G, D, _ = fnets.networks(config)
    state = fstate.init_state(config, jax.random.key(seed))
    b = real.shape[0]
    z = jax.random.normal(jax.random.key(seed + 1), (b, config.model.z_dim))
    fake, _ = G.apply(state["g"], z, train=True, mutable=MUTABLE)
    a = jax.random.uniform(jax.random.key(seed + 2), (b, 1, 1, real.shape[-1]))
    inputs = {"real": jnp.asarray(real), "fake": fake, "interp": a * real + (1 - a) * fake}

    def head(x, which):
        out, _ = D.apply(state["d"], x, train=True, mutable=MUTABLE)
        if which == "global":
            return jnp.sum(out.global_logit)
        return jnp.sum(losses.pixel_reduce(out.pixel_logits, config.train.pixel_reduction))

    norms = {}
    for (name, x), which in itertools.product(inputs.items(), ("global", "pixel")):
        g = jax.grad(head)(x, which)
        norms[f"{which}_{name}"] = float(jnp.mean(jnp.sqrt(jnp.sum(g**2, axis=(1, 2, 3)))))
    return norms


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", default="benchmarks/results/critic_conditioning")
    args = p.parse_args(argv)
    rows = []
    settings = [
        # (d_norm, d_global_pool, pixel_reduction, generator_output)
        ("instance", "sum", "sum", "relu_tanh"),  # the reference
        ("instance", "sum", "mean", "relu_tanh"),
        ("instance", "mean", "mean", "relu_tanh"),
        ("instance", "sum", "mean", "tanh"),
        ("none", "sum", "sum", "tanh"),
        ("none", "sum", "mean", "tanh"),  # the defaults
        ("none", "mean", "mean", "tanh"),
    ]
    for d_norm, pool, reduction, output in settings:
        config = get_config()
        config.data.image_size = config.model.image_size = args.image_size
        config.model.width = args.width
        config.model.d_norm, config.model.d_global_pool = d_norm, pool
        config.train.pixel_reduction, config.model.generator_output = reduction, output
        config.data.value_range = (0.0, 1.0) if output == "relu_tanh" else (-1.0, 1.0)
        batch = next(iter(data_lib.eval_batches(config.data, "train", batch_size=args.batch)))
        norms = input_gradient_norms(config, np.asarray(batch["image"]))
        rows.append(dict(d_norm=d_norm, d_global_pool=pool, pixel_reduction=reduction,
                         generator_output=output, **norms,
                         gp_global=(norms["global_interp"] - 1) ** 2, gp_pixel=(norms["pixel_interp"] - 1) ** 2))
    columns = [("d_norm", "d_norm"), ("d_global_pool", "global pool"), ("pixel_reduction", "pixel reduction"),
               ("generator_output", "G output"), ("global_real", "global: real"), ("global_fake", "fake"),
               ("global_interp", "interp."), ("pixel_real", "pixel: real"), ("pixel_fake", "fake"),
               ("pixel_interp", "interp."), ("gp_global", "GP_enc at init"), ("gp_pixel", "GP_dec at init")]
    md = common.write_results(
        args.out, title=f"Critic input-gradient norms at initialisation (demo, {args.image_size}x"
                        f"{args.image_size}, width {args.width}, batch {args.batch})",
        command=common.command_line(), meta=common.machine_info(), rows=rows, columns=columns,
        notes=["norm = mean over the batch of ||d head / d x||_2 per image; the WGAN-GP target is 1.",
               "GP at init = (interpolate norm - 1)^2, the size of the penalty the first steps fight."])
    print(md)
    return md


if __name__ == "__main__":
    main()
