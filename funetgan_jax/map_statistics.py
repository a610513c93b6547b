"""Running statistics of the anomaly map's two terms on training images (state['map_stats']).

The critic term of the map (`config.eval.critic_weight` > 0, funetgan_jax/scoring.py's
critic_map) is standardised by them; the encoder stage gathers them as it trains, and a
restored state that lacks them gets them from the training split (`fill_map_stats`).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from anomaly_core import data as data_lib
from funetgan_jax import scoring
from funetgan_jax.networks import reconstruct
from funetgan_jax.train_state import encoder_updates, initial_map_stats


MAP_STATS_DECAY = 0.99  # of the running map statistics, per encoder update (after a warm-up)


def batch_map_stats(config, state, x: jax.Array) -> dict[str, jax.Array]:
    """The first and second moments, over all pixels of the batch x (B, H, W, C), of the two
    map terms the eval-mode networks score with: the residual map (scoring.residual_map) and
    the critic's pixel logits D_dec(x)."""
    xr, (_, dec_x), (_, dec_xr), logits = jax.lax.stop_gradient(reconstruct(config, state, x))
    res = scoring.residual_map(x.astype(jnp.float32), xr.astype(jnp.float32), dec_x, dec_xr, config.train.kappa)
    logits = logits.astype(jnp.float32)
    return {"residual_mean": jnp.mean(res), "residual_sq": jnp.mean(jnp.square(res)),
            "critic_mean": jnp.mean(logits), "critic_sq": jnp.mean(jnp.square(logits))}


def update_map_stats(config, state, x: jax.Array, updates: jax.Array) -> dict[str, jax.Array]:
    """state['map_stats'] moved towards batch_map_stats of the training batch x after
    n = `updates` encoder updates, by decay min(MAP_STATS_DECAY, (1 + n) / (10 + n))."""
    n = jnp.asarray(updates, jnp.float32)
    d = jnp.minimum(MAP_STATS_DECAY, (1.0 + n) / (10.0 + n))
    return jax.tree.map(lambda old, new: d * old + (1.0 - d) * new, state["map_stats"],
                        batch_map_stats(config, state, x))


def gathers_map_stats(config) -> bool:
    """Whether the encoder stage gathers the map statistics: only the critic term of the map
    (config.eval.critic_weight > 0) reads them, and gathering them costs an eval-mode pass
    of E, G and D per update (on the quickstart's CPU, a third of the encoder update)."""
    return float(config.eval.critic_weight) > 0


def map_stats_missing(config, state) -> bool:
    """Method.refill: `config` scores with the critic term but the trained `state` holds the
    placeholder map statistics (it was trained with config.eval.critic_weight 0, so its
    encoder stage did not gather them). Real statistics never equal the placeholders exactly."""
    if not gathers_map_stats(config) or int(jax.device_get(encoder_updates(state["opt_e"]))) == 0:
        return False
    stats = jax.device_get(state["map_stats"])
    return all(float(stats[k]) == float(v) for k, v in initial_map_stats().items())


def fill_map_stats(config, state, train) -> dict[str, Any]:
    """Method.fill_state: the map statistics of a state that has none. A state whose encoder
    has not trained keeps the placeholders (the encoder stage gathers them); a trained one
    (a checkpoint written before they were saved, or one trained without the critic term and
    now scored with it, `map_stats_missing`) gets them from the whole training split."""
    if int(jax.device_get(encoder_updates(state["opt_e"]))) == 0:
        return {**state, "map_stats": initial_map_stats()}
    moments = jax.jit(lambda s, x: batch_map_stats(config, s, x))
    sums, count = jax.tree.map(lambda v: 0.0 * v, initial_map_stats()), 0
    for batch in data_lib.eval_batches(config.data, train, batch_size=int(config.eval.batch_size)):
        x = np.asarray(batch["image"])[np.asarray(batch["valid"], bool)]
        if len(x):
            sums = jax.tree.map(lambda t, v, n=len(x): t + n * v, sums, moments(state, jnp.asarray(x)))
            count += len(x)
    return {**state, "map_stats": jax.tree.map(lambda t: t / count, sums) if count else initial_map_stats()}
