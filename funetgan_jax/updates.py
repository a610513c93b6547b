"""f-UNetGAN's training steps: the D, G and E updates the two stages run.

Stage 1 'adversarial' (docs/METHODS.md 1.5): each jitted call runs n_critic discriminator
updates followed by one generator update with the last discriminator step's z. Stage 2
'encoder' (1.6): the encoder trains through frozen G and D. The loss terms are
funetgan_jax/losses.py's; here they are wired to the networks and the optimisers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from funetgan_jax import losses
from funetgan_jax.map_statistics import gathers_map_stats, update_map_stats
from funetgan_jax.networks import MUTABLE, encoder_target, generator_variables, networks, split_variables
from funetgan_jax.train_state import encoder_updates, optimizers, update_ema


def discriminator_update(config, g_vars, d_vars, opt_d, x, key):
    """One D update on real images x (B, H, W, C): fake = G(z) (train mode, G not trained),
    the D loss with both gradient penalties and the consistency term, one optimiser step.

    Returns (g_vars, d_vars, opt_d, metrics, z); g_vars carries G's spectral/BatchNorm
    state after the forward, z (B, z_dim) is the latent drawn.
    """
    G, D, _ = networks(config)
    t = config.train
    k_z, k_d = jax.random.split(key)
    z = jax.random.normal(k_z, (x.shape[0], config.model.z_dim), x.dtype)
    g_params, g_state = split_variables(g_vars)
    fake, g_state = G.apply({"params": g_params, **g_state}, z, train=True, mutable=MUTABLE)
    d_params, d_state = split_variables(d_vars)

    def loss_fn(p):
        d_fn = lambda inp, s: D.apply({"params": p, **s}, inp, train=True, mutable=MUTABLE)  # noqa: E731
        return losses.discriminator_loss_from_networks(
            d_fn, d_state, x, fake, k_d, consistency=t.consistency, interpolation=t.interpolation,
            lambda_gp=t.lambda_gp, lambda_mix=t.lambda_mix, pixel_reduction=t.pixel_reduction,
        )

    (_, (metrics, d_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    updates, opt_d = optimizers(config)["d"].update(grads, opt_d, d_params)
    d_params = optax.apply_updates(d_params, updates)
    return {"params": g_params, **g_state}, {"params": d_params, **d_state}, opt_d, metrics, z


def generator_update(config, g_vars, d_vars, opt_g, z):
    """One G update at latents z (B, z_dim) against D in train mode (D not trained).

    Returns (g_vars, d_vars, opt_g, metrics); d_vars carries D's spectral state after the forward.
    """
    G, D, _ = networks(config)
    g_params, g_state = split_variables(g_vars)
    d_params, d_state = split_variables(d_vars)

    def g_loss_fn(p):
        fake, new_g_state = G.apply({"params": p, **g_state}, z, train=True, mutable=MUTABLE)
        d_out, new_d_state = D.apply({"params": d_params, **d_state}, fake, train=True, mutable=MUTABLE)
        loss, metrics = losses.generator_loss(d_out, config.train.pixel_reduction)
        return loss, (metrics, new_g_state, new_d_state)

    (_, (metrics, g_state, d_state)), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g_params)
    updates, opt_g = optimizers(config)["g"].update(grads, opt_g, g_params)
    g_params = optax.apply_updates(g_params, updates)
    return {"params": g_params, **g_state}, {"params": d_params, **d_state}, opt_g, metrics


def adversarial_step(config, state, batches, rng):
    """n_critic D updates on batches['image'] (n_critic, B, H, W, C), then one G update."""
    images = batches["image"]
    if images.ndim == 4:  # n_critic = 1: the loop passes a single, unstacked batch
        images = images[None]
    n_critic = images.shape[0]

    def d_update(carry, inputs):
        g_vars, d_vars, opt_d, metrics, z = discriminator_update(config, *carry, *inputs)
        return (g_vars, d_vars, opt_d), (metrics, z)

    keys = jax.random.split(rng, n_critic)
    carry = (state["g"], state["d"], state["opt_d"])
    if jax.default_backend() == "cpu":
        # On CPU the n_critic updates are traced one after the other instead of as a loop:
        # XLA:CPU rewrites convolutions into its fast (Eigen) layout only in the top-level
        # computation (cpu/conv_canonicalization.h: "all top-level convolutions"), so inside
        # a while loop every gradient convolution ran on the naive emitter; measured on
        # configs/quickstart.py 2.5x slower per step. (A scan with unroll=n_critic still
        # emits a one-trip while loop when n_critic is 1.) Same math either way; other
        # backends keep the loop (compile time independent of n_critic).
        outs = []
        for i in range(n_critic):
            carry, out = d_update(carry, (images[i], keys[i]))
            outs.append(out)
        d_metrics, zs = jax.tree.map(lambda *a: jnp.stack(a), *outs)
    else:
        carry, (d_metrics, zs) = jax.lax.scan(d_update, carry, (images, keys))
    g_vars, d_vars, opt_d = carry
    z = zs[-1]  # the generator step reuses the last discriminator step's z (docs/METHODS.md 1.5)
    g_vars, d_vars, opt_g, g_metrics = generator_update(config, g_vars, d_vars, state["opt_g"], z)
    metrics = {k: jnp.mean(v) for k, v in d_metrics.items()} | g_metrics
    new_state = dict(state)
    new_state.update(g=g_vars, d=d_vars, opt_d=opt_d, opt_g=opt_g)
    if "g_ema" in state:
        new_state["g_ema"] = update_ema(config, state["g_ema"], g_vars, opt_g[0].count)
    return new_state, metrics


def _frozen_fns(config, state):
    """Eval-mode G and D-target functions (frozen: no statistics change)."""
    G, D, _ = networks(config)
    target = encoder_target(config)
    generate = lambda z: G.apply(generator_variables(state), z, train=False)  # noqa: E731

    def features(x):
        return losses.critic_targets(D.apply(state["d"], x, train=False, return_features=True), target)

    return generate, features


def encoder_objective(config, state, e_params, e_state, x, rng=None):
    """L_E of docs/METHODS.md 1.6 on real images x; with config.train.latent_weight > 0 plus
    latent_weight * mean (E(G(z)) - z)^2 on G's samples at z ~ N(0, I) (f-AnoGAN's 'ziz'
    term: it teaches E to invert G on G's own range; needs `rng`)."""
    _, _, E = networks(config)
    generate, features = _frozen_fns(config, state)
    encode = lambda inp, s: E.apply({"params": e_params, **s}, inp, train=True, mutable=MUTABLE)  # noqa: E731
    loss, (metrics, e_state) = losses.encoder_loss(encode, generate, features, e_state, x, kappa=config.train.kappa,
                                                   detach_critic=config.train.detach_critic)
    weight = float(config.train.latent_weight)
    if weight > 0:
        z = jax.random.normal(rng, (x.shape[0], config.model.z_dim), jnp.float32)
        z_hat, e_state = encode(jax.lax.stop_gradient(generate(z)).astype(x.dtype), e_state)
        l_latent = losses.latent_regression_loss(z_hat, z)
        loss = loss + weight * l_latent
        metrics = {**metrics, "e_loss": loss, "l_latent": l_latent}
    return loss, (metrics, e_state)


def encoder_step(config, state, batch, rng):
    tx = optimizers(config)
    e_params, e_state = split_variables(state["e"])
    (_, (metrics, e_state)), grads = jax.value_and_grad(
        lambda p: encoder_objective(config, state, p, e_state, batch["image"], rng), has_aux=True
    )(e_params)
    updates, opt_e = tx["e"].update(grads, state["opt_e"], e_params)
    new_state = dict(state)
    new_state.update(e={"params": optax.apply_updates(e_params, updates), **e_state}, opt_e=opt_e)
    if gathers_map_stats(config):
        new_state["map_stats"] = update_map_stats(config, new_state, batch["image"], encoder_updates(opt_e))
    return new_state, metrics
