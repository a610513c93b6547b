"""f-UNetGAN's three networks built from the config, and their eval-mode passes on a state.

The state (funetgan_jax/train_state.py) holds each network's variables: 'g', 'd', 'e' (params,
batch_stats, spectral) and, with a moving average of G, 'g_ema', which then stands in for G
after training (the encoder stage, scoring, the sample grids). Nothing here trains.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from funetgan_jax import losses, scoring
from funetgan_jax.build import build_discriminator, build_encoder, build_generator


MUTABLE = ("batch_stats", "spectral")


def networks(config):
    return build_generator(config.model), build_discriminator(config.model), build_encoder(config.model)


def split_variables(variables) -> tuple[Any, dict]:
    """(params, the other collections) of a variables dict."""
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def generator_variables(state) -> dict[str, Any]:
    """The generator used after training: the moving average 'g_ema' when kept, else 'g'."""
    return state.get("g_ema", state["g"])


def generate_fn(config, state) -> Callable[[jax.Array], jax.Array]:
    """z (B, z_dim) -> G(z) (B, H, W, C), eval mode (the moving average of G when kept)."""
    G, _, _ = networks(config)
    return lambda z: G.apply(generator_variables(state), z, train=False)


def encoder_target(config) -> str:
    """What of D the encoder stage and the score compare: 'features' | 'logits' (losses.critic_targets)."""
    return config.train.encoder_target


def reconstruct_image(config, state, x, refine_steps: int = 0, refine_lr: float = 0.05):
    """xr = G(E(x)) (B, H, W, C) in eval mode; refine_steps > 0: z = E(x) is first refined by
    that many Adam steps on ||G(z) - x||^2 (scoring.refine_latent)."""
    _, _, E = networks(config)
    generate = generate_fn(config, state)
    z = scoring.refine_latent(generate, x, E.apply(state["e"], x, train=False), refine_steps, refine_lr)
    return generate(z)


def reconstruct(config, state, x, refine_steps: int = 0, refine_lr: float = 0.05, xr=None):
    """xr = reconstruct_image(...) (or the given one), D's targets (config.train.encoder_target)
    of x and of xr, and D's pixel logits of x (B, H, W, 1) (one D pass on both)."""
    _, D, _ = networks(config)
    if xr is None:
        xr = reconstruct_image(config, state, x, refine_steps, refine_lr)
    out = D.apply(state["d"], jnp.concatenate([x, xr]), train=False, return_features=True)
    enc, dec = losses.critic_targets(out, encoder_target(config))
    n = x.shape[0]
    return xr, (enc[:n], dec[:n]), (enc[n:], dec[n:]), out.pixel_logits[:n]
