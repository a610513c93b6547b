"""f-UNetGAN training mechanics: the critic's penalty falls, the generator's moving average."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.funetgan_base import shrink
from configs.quickstart import get_config
from funetgan_jax import train as ft


def _images(n, size, seed=0):
    """Smooth random images in [0, 1] (B, size, size, 3)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.2, 0.8, (n, size // 4, size // 4, 1))
    return np.repeat(np.repeat(np.repeat(coarse, 4, 1), 4, 2), 3, 3).astype(np.float32)


def test_critic_penalty_decreases_and_stays_finite():
    """The reference's critic (instance norm, pixel sums) starts far from 1-Lipschitz; a few
    adversarial steps must bring both penalties down, with every value finite."""
    config = shrink(get_config(), image_size=32, width=4)
    config.model.d_norm, config.train.pixel_reduction = "instance", "sum"
    config.train.lr_d = config.train.lr_g = 1e-3
    state = ft.init_state(config, jax.random.key(0))
    step = jax.jit(functools.partial(ft.adversarial_step, config))
    x = _images(config.train.n_critic * config.train.batch_size, 32)
    x = x.reshape(config.train.n_critic, config.train.batch_size, 32, 32, 3)
    history = []
    for i in range(30):
        state, metrics = step(state, {"image": jnp.asarray(x)}, jax.random.key(i))
        history.append({k: float(v) for k, v in metrics.items()})
    for m in history:
        assert all(np.isfinite(v) for v in m.values()), m
    # Measured on the 2-core CPU: gp_enc 290 -> 180, gp_dec 8,709 -> 122 (means of the first
    # and the last five steps); the bounds leave room for other machines' rounding.
    for key, ratio in (("gp_enc", 0.8), ("gp_dec", 0.1)):
        first = np.mean([m[key] for m in history[:5]])
        last = np.mean([m[key] for m in history[-5:]])
        assert last < ratio * first, (key, first, last)


def test_generator_moving_average():
    config = shrink(get_config(), image_size=32, width=2)
    config.train.g_ema_decay = 0.9
    ema = {"params": {"w": jnp.full((2,), 1.0)}, "batch_stats": {"m": jnp.zeros(1)}}
    g = {"params": {"w": jnp.full((2,), 3.0)}, "batch_stats": {"m": jnp.ones(1)}}
    # warm-up: after 1 update d = min(0.9, 2/11)
    out = ft.update_ema(config, ema, g, 1)
    d = 2.0 / 11.0
    np.testing.assert_allclose(out["params"]["w"], d * 1.0 + (1 - d) * 3.0, rtol=1e-6)
    np.testing.assert_array_equal(out["batch_stats"]["m"], g["batch_stats"]["m"])  # G's statistics
    out = ft.update_ema(config, ema, g, 1000)  # long after warm-up: d = 0.9
    np.testing.assert_allclose(out["params"]["w"], 0.9 * 1.0 + 0.1 * 3.0, rtol=1e-6)
    state = jax.eval_shape(lambda k: ft.init_state(config, k), jax.random.key(0))
    assert "g_ema" in state and ft.generator_variables(state) is state["g_ema"]
    config.train.g_ema_decay = 0.0
    state = jax.eval_shape(lambda k: ft.init_state(config, k), jax.random.key(0))
    assert "g_ema" not in state and ft.generator_variables(state) is state["g"]
    config.train.g_ema_decay = 1.0
    with pytest.raises(ValueError, match="config.train.g_ema_decay"):
        ft.init_state(config, jax.random.key(0))
