"""f-UNetGAN training mechanics: the critic's penalty falls, the generator's moving average."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_core.program.program import init_key
from configs.funetgan_base import shrink
from configs.quickstart import get_config
from funetgan_jax import scoring
from funetgan_jax import networks as fnets
from funetgan_jax import score_fns as fscore
from funetgan_jax import train_state as fstate
from funetgan_jax import updates as fupdates


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
    # One critic update per step (90 steps): the same critic updates as n_critic 2 would take
    # in 45, from a program that compiles in about half the time.
    config.train.n_critic = 1
    # The program's initialisation key (unsafe_rbg): its init compiles in 13.9 s, from threefry 16.6 s.
    state = jax.jit(functools.partial(fstate.init_state, config))(init_key(0))
    step = jax.jit(functools.partial(fupdates.adversarial_step, config))
    x = _images(config.train.batch_size, 32).reshape(1, config.train.batch_size, 32, 32, 3)
    history = []
    for i in range(90):
        state, metrics = step(state, {"image": jnp.asarray(x)}, jax.random.key(i))
        history.append({k: float(v) for k, v in metrics.items()})
    for m in history:
        assert all(np.isfinite(v) for v in m.values()), m
    # Measured on the 2-core CPU: gp_enc 521 -> 44, gp_dec 2,705 -> 6.6 (means of the first
    # and the last five steps; from a threefry key they were 282 -> 132 and 8,133 -> 31); the
    # bounds leave room for other machines' rounding.
    for key, ratio in (("gp_enc", 0.8), ("gp_dec", 0.1)):
        first = np.mean([m[key] for m in history[:5]])
        last = np.mean([m[key] for m in history[-5:]])
        assert last < ratio * first, (key, first, last)


def test_generator_moving_average(monkeypatch):
    config = shrink(get_config(), image_size=32, width=2)
    config.train.g_ema_decay = 0.9
    ema = {"params": {"w": jnp.full((2,), 1.0)}, "batch_stats": {"m": jnp.zeros(1)}}
    g = {"params": {"w": jnp.full((2,), 3.0)}, "batch_stats": {"m": jnp.ones(1)}}
    # warm-up: after 1 update d = min(0.9, 2/11)
    out = fstate.update_ema(config, ema, g, 1)
    d = 2.0 / 11.0
    np.testing.assert_allclose(out["params"]["w"], d * 1.0 + (1 - d) * 3.0, rtol=1e-6)
    np.testing.assert_array_equal(out["batch_stats"]["m"], g["batch_stats"]["m"])  # G's statistics
    out = fstate.update_ema(config, ema, g, 1000)  # long after warm-up: d = 0.9
    np.testing.assert_allclose(out["params"]["w"], 0.9 * 1.0 + 0.1 * 3.0, rtol=1e-6)
    state = jax.eval_shape(lambda k: fstate.init_state(config, k), jax.random.key(0))
    assert "g_ema" in state and fnets.generator_variables(state) is state["g_ema"]
    config.train.g_ema_decay = 0.0
    state = jax.eval_shape(lambda k: fstate.init_state(config, k), jax.random.key(0))
    assert "g_ema" not in state and fnets.generator_variables(state) is state["g"]
    config.train.g_ema_decay = 1.0
    # ... refused before any network is built or initialised
    monkeypatch.setattr(fstate, "networks", lambda config: pytest.fail("networks built before the check"))
    with pytest.raises(ValueError, match="config.train.g_ema_decay"):
        fstate.init_state(config, jax.random.key(0))


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(v, "eqns"):
                yield v.jaxpr if hasattr(v, "jaxpr") else v


def _primitives(jaxpr, in_loop=False):
    """(primitive name, inside a scan/while loop) of every equation, nested jaxprs included."""
    for eqn in jaxpr.eqns:
        yield eqn.primitive.name, in_loop
        for sub in _sub_jaxprs(eqn):
            yield from _primitives(sub, in_loop or eqn.primitive.name in ("scan", "while"))


@pytest.mark.parametrize("n_critic", [1, 2])
def test_cpu_adversarial_step_has_no_convolution_in_a_loop(n_critic):
    """On CPU the n_critic critic updates are traced in sequence: inside a loop (a scan, even a
    one-trip one) every convolution of the step ran on XLA:CPU's slow emitter."""
    config = shrink(get_config(), image_size=32, width=2)
    config.train.n_critic = n_critic
    state = jax.eval_shape(lambda k: fstate.init_state(config, k), jax.random.key(0))
    x = jax.ShapeDtypeStruct((n_critic, config.train.batch_size, 32, 32, 3), jnp.float32)
    jaxpr = jax.make_jaxpr(functools.partial(fupdates.adversarial_step, config))(state, {"image": x}, jax.random.key(0))
    convs = [in_loop for name, in_loop in _primitives(jaxpr.jaxpr) if name == "conv_general_dilated"]
    assert convs and not any(convs)


def _tiny_state_and_batch(weight: float = 0.0):
    config = shrink(get_config(), image_size=32, width=2)
    config.eval.critic_weight, config.eval.smoothing_sigma = weight, 0.0
    state = fstate.init_state(config, jax.random.key(0))
    x = jnp.asarray(_images(config.train.batch_size, 32) * 2 - 1)
    return config, state, x


def test_encoder_step_gathers_the_map_statistics_only_for_the_critic_term():
    config, state, x = _tiny_state_and_batch(weight=0.0)
    new, _ = jax.jit(functools.partial(fupdates.encoder_step, config))(state, {"image": x}, jax.random.key(1))
    assert jax.tree.map(float, new["map_stats"]) == jax.tree.map(float, fstate.initial_map_stats())
    assert int(fstate.encoder_updates(new["opt_e"])) == 1

    config, state, x = _tiny_state_and_batch(weight=1.0)
    new, _ = jax.jit(functools.partial(fupdates.encoder_step, config))(state, {"image": x}, jax.random.key(1))
    # brute force: the residual map and the critic's pixel logits of the updated networks
    xr, (_, dec_x), (_, dec_xr), logits = fnets.reconstruct(config, new, x)
    res = np.mean(np.abs(np.asarray(xr) - np.asarray(x)), -1) + config.train.kappa * np.mean(
        np.abs(np.asarray(dec_xr) - np.asarray(dec_x)), -1)
    logits = np.asarray(logits, np.float64)
    batch = {"residual_mean": res.mean(), "residual_sq": np.square(res).mean(),
             "critic_mean": logits.mean(), "critic_sq": np.square(logits).mean()}
    d = 2.0 / 11.0  # the warm-up decay after one update
    initial = fstate.initial_map_stats()
    for key, value in batch.items():
        np.testing.assert_allclose(new["map_stats"][key], d * float(initial[key]) + (1 - d) * value, rtol=2e-5)
    assert float(batch["critic_sq"] - batch["critic_mean"] ** 2) > 0


def test_an_rmsprop_encoder_counts_its_updates():
    """encoder_optimizer 'rmsprop' (whose optax state has no count) trains and gathers the map
    statistics with the same warm-up as Adam."""
    config, state, x = _tiny_state_and_batch(weight=1.0)
    config.train.encoder_optimizer = "rmsprop"
    state = fstate.init_state(config, jax.random.key(0))
    step = jax.jit(functools.partial(fupdates.encoder_step, config))
    for i in range(2):
        state, metrics = step(state, {"image": x}, jax.random.key(i))
    assert int(fstate.encoder_updates(state["opt_e"])) == 2
    assert np.isfinite(float(metrics["e_loss"]))
    assert jax.tree.map(float, state["map_stats"]) != jax.tree.map(float, fstate.initial_map_stats())


def test_critic_weight_adds_the_standardised_critic_map():
    config, state, x = _tiny_state_and_batch(weight=0.0)
    state["map_stats"] = {"residual_mean": jnp.float32(0.5), "residual_sq": jnp.float32(1.25),  # sd 1
                          "critic_mean": jnp.float32(2.0), "critic_sq": jnp.float32(13.0)}  # sd 3
    plain = fscore.score_fn(config)(state, {"image": x})
    config.eval.critic_weight = 2.0
    with_critic = fscore.score_fn(config)(state, {"image": x})
    logits = np.asarray(fnets.reconstruct(config, state, x)[3])[..., 0]
    np.testing.assert_allclose(np.asarray(with_critic["anomaly_map"]) - np.asarray(plain["anomaly_map"]),
                               2.0 * 1.0 * (2.0 - logits) / 3.0, rtol=1e-4, atol=1e-5)


def test_refine_steps_score_the_refined_reconstruction():
    config, state, x = _tiny_state_and_batch()
    config.eval.image_score, config.eval.refine_steps = "mean_map", 0
    plain = fscore.score_fn(config)(state, {"image": x})
    config.eval.refine_steps, config.eval.refine_lr = 5, 0.1
    refined = fscore.score_fn(config)(state, {"image": x})
    G, _, E = fnets.networks(config)
    generate = lambda z: G.apply(fnets.generator_variables(state), z, train=False)  # noqa: E731
    z = scoring.refine_latent(generate, x, E.apply(state["e"], x, train=False), 5, 0.1)
    np.testing.assert_allclose(refined["reconstruction"], generate(z), rtol=1e-5, atol=1e-6)
    assert config.eval.kappa == 0 and config.eval.critic_weight == 0  # the map is the residual alone
    np.testing.assert_allclose(refined["anomaly_map"], np.abs(np.asarray(generate(z)) - np.asarray(x)).mean(-1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(refined["image_score"], np.asarray(refined["anomaly_map"]).mean((1, 2)), rtol=1e-5)
    err = lambda out: float(np.mean(np.square(np.asarray(out["reconstruction"]) - np.asarray(x))))  # noqa: E731
    assert err(refined) < err(plain)


def test_validation_loss_is_the_encoder_loss_per_image():
    """validation_fn: per image, L_E of docs/METHODS.md 1.6 in eval mode; with kappa 0 the
    image term alone, computed without the critic."""
    config, state, x = _tiny_state_and_batch()
    for kappa in (0.0, 0.5):
        config.train.kappa = kappa
        got = np.asarray(jax.jit(fscore.validation_fn(config))(state, {"image": x})["e_loss"])
        xr, (ex, dx), (exr, dxr), _ = (np.asarray(a, np.float64) if not isinstance(a, tuple) else
                                       tuple(np.asarray(t, np.float64) for t in a)
                                       for a in fnets.reconstruct(config, state, x))
        xd = np.asarray(x, np.float64)
        want = (np.square(xr - xd).mean((1, 2, 3)) + kappa * (np.square(exr - ex).mean(1)
                                                                + np.square(dxr - dx).mean((1, 2, 3))))
        np.testing.assert_allclose(got, want, rtol=1e-4)


def test_host_score_on_cpu_is_the_score_with_the_refinement_called_step_by_step():
    from anomaly_core.training import parallel

    config, state, x = _tiny_state_and_batch()
    mesh = parallel.make_mesh()
    config.eval.refine_steps = 0
    assert fscore.host_score_fn(config, mesh) is None  # nothing to loop over: the program jits score_fn
    config.eval.image_score, config.eval.refine_steps, config.eval.refine_lr = "mean_map", 4, 0.1
    assert jax.default_backend() == "cpu"
    host = fscore.host_score_fn(config, mesh)
    with jax.set_mesh(mesh):
        batch = parallel.global_batch({"image": np.asarray(x)}, mesh)
        got = host(parallel.replicate(state, mesh), batch)
    want = jax.jit(fscore.score_fn(config))(state, {"image": x})
    assert set(got) == set(want)
    for k in want:  # 4 updates: the float rounding of the two programs has not been amplified yet
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-4, atol=1e-5, err_msg=k)
    # ... and the critic term (kappa > 0) goes through the same scoring code.
    config.eval.kappa = 0.5
    with jax.set_mesh(mesh):
        got = fscore.host_score_fn(config, mesh)(parallel.replicate(state, mesh), batch)
    np.testing.assert_allclose(np.asarray(got["anomaly_map"]),
                               np.asarray(jax.jit(fscore.score_fn(config))(state, {"image": x})["anomaly_map"]),
                               rtol=1e-4, atol=1e-5)
