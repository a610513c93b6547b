"""f-UNetGAN's training state: its initialisation, the optimisers and the moving average of G.

One pytree: {'g', 'd', 'e'} variables (params, batch_stats, spectral), {'opt_g', 'opt_d',
'opt_e'} optimiser states and 'map_stats' (running statistics of the anomaly map's residual
and critic terms, funetgan_jax/map_statistics.py); with `config.train.g_ema_decay` > 0 also
'g_ema', an exponential moving average of G's parameters (with G's current statistics).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from anomaly_core import settings
from funetgan_jax.networks import networks


ENCODER_OPTIMIZERS = ("adam", "rmsprop")


EMA_RULE = settings.number("config.train.g_ema_decay", 0, 1, high_open=True)


def optimizers(config) -> dict[str, optax.GradientTransformation]:
    t = config.train
    adam = lambda lr: optax.adam(lr, b1=t.betas[0], b2=t.betas[1])  # noqa: E731
    # RMSProp's state has no update count (Adam's does); an identity step that counts is
    # chained after it, so `encoder_updates` reads the count of either.
    encoder = (adam(t.lr_e) if t.encoder_optimizer == "adam"
               else optax.chain(optax.rmsprop(t.lr_e), optax.scale_by_schedule(lambda count: 1.0)))
    return {"g": adam(t.lr_g), "d": adam(t.lr_d), "e": encoder}


def encoder_updates(opt_e) -> jax.Array:
    """How many updates the encoder optimiser state `opt_e` has made (int32 scalar)."""
    return optax.tree_utils.tree_get(opt_e, "count")


def initial_map_stats() -> dict[str, jax.Array]:
    """Placeholder map statistics (both terms: mean 0, variance 1) until the encoder stage
    gathers them."""
    return {"residual_mean": jnp.float32(0.0), "residual_sq": jnp.float32(1.0),
            "critic_mean": jnp.float32(0.0), "critic_sq": jnp.float32(1.0)}


def init_state(config, rng) -> dict[str, Any]:
    ema_decay = _ema_decay(config)  # checked before the networks are built
    G, D, E = networks(config)
    m = config.model
    kg, kd, ke = jax.random.split(rng, 3)
    x = jnp.zeros((1, m.image_size, m.image_size, m.channels), jnp.float32)
    g = G.init({"params": kg}, jnp.zeros((1, m.z_dim), jnp.float32), train=False)
    d = D.init({"params": kd}, x, train=False)
    e = E.init({"params": ke}, x, train=False)
    tx = optimizers(config)
    state = {
        "g": g, "d": d, "e": e,
        "opt_g": tx["g"].init(g["params"]),
        "opt_d": tx["d"].init(d["params"]),
        "opt_e": tx["e"].init(e["params"]),
        "map_stats": initial_map_stats(),
    }
    if ema_decay > 0:
        state["g_ema"] = g
    return state


def _ema_decay(config) -> float:
    settings.check(config, [EMA_RULE])
    return float(config.train.g_ema_decay)


def update_ema(config, ema_vars, g_vars, g_updates: jax.Array) -> dict[str, Any]:
    """ema <- d * ema + (1 - d) * params after `g_updates` (>= 1) generator updates, with
    d = min(g_ema_decay, (1 + n) / (10 + n)) so early averages do not lag far behind;
    the statistics (batch_stats, spectral) are G's current ones."""
    n = jnp.asarray(g_updates, jnp.float32)
    d = jnp.minimum(_ema_decay(config), (1.0 + n) / (10.0 + n))
    params = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_vars["params"], g_vars["params"])
    return {**g_vars, "params": params}
