"""f-UNetGAN's score and validation functions of a trained state (the Method's `score`,
`host_score` and `validation`); the map and score arithmetic is funetgan_jax/scoring.py's.
"""
from __future__ import annotations

import jax

from anomaly_core.training import parallel
from funetgan_jax import losses, scoring
from funetgan_jax.networks import generate_fn, networks, reconstruct, reconstruct_image


def _refinement(config) -> tuple[int, float]:
    ev = config.eval
    return int(ev.refine_steps), float(ev.refine_lr)


def _scores_of(config, state, batch, xr):
    """The score's outputs for the images batch['image'] and their reconstructions xr."""
    ev = config.eval
    weight = float(ev.critic_weight)
    x = batch["image"]
    if ev.kappa == 0 and weight == 0:  # the map is the residual alone: no critic pass
        fx = fxr = critic = None
    else:
        xr, fx, fxr, logits = reconstruct(config, state, x, xr=xr)
        critic = scoring.critic_map(logits, state["map_stats"], weight) if weight > 0 else None
    image_scores, maps = scoring.anomaly_scores(
        x, xr, fx, fxr, kappa=ev.kappa, smoothing_sigma=ev.smoothing_sigma, image_score=ev.image_score,
        critic_map=critic,
    )
    return {"image_score": image_scores, "anomaly_map": maps, "reconstruction": xr}


def score_fn(config):
    steps, lr = _refinement(config)

    def score(state, batch):
        return _scores_of(config, state, batch, reconstruct_image(config, state, batch["image"], steps, lr))

    return score


def host_score_fn(config, mesh):
    """On CPU, with test-time refinement (config.eval.refine_steps > 0): score_fn's
    computation as jitted pieces that Python calls in turn (encode, each Adam update of the
    refinement, score), else None. XLA:CPU runs the convolutions of a loop body on its slow
    path (see adversarial_step); with the updates called one by one the quickstart's evaluation
    took 22 s instead of 28 s on the 2-core CPU. The float rounding differs from the looped
    program, and 75 refinement updates amplify it (the quickstart's image AUROC moved by 0.001)."""
    steps, lr = _refinement(config)
    if steps == 0 or jax.default_backend() != "cpu":
        return None
    _, _, E = networks(config)
    rep, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    start = jax.jit(lambda state, x: scoring.refine_start(E.apply(state["e"], x, train=False), lr),
                    in_shardings=(rep, shard))
    update = jax.jit(lambda state, x, carry: scoring.refine_update(generate_fn(config, state), x, carry, lr),
                     donate_argnums=2)
    finish = jax.jit(lambda state, batch, z: _scores_of(config, state, batch, generate_fn(config, state)(z)),
                     out_shardings=shard)

    def score(state, batch):
        x = batch["image"]
        carry = start(state, x)
        for _ in range(steps):
            carry = update(state, x, carry)
        return finish(state, batch, carry[0])

    return score


def validation_fn(config):
    """Per-example encoder loss (docs/METHODS.md 1.6) on validation data, eval mode: picks the best encoder."""
    kappa = config.train.kappa

    def one(x, xr, fx, fxr):
        add_batch = lambda t: jax.tree.map(lambda a: a[None], t)  # noqa: E731
        loss, _ = losses.encoder_loss_terms(*add_batch((x, xr, fx, fxr)), kappa=kappa)
        return loss

    def validate(state, batch):
        x = batch["image"]
        if kappa == 0:  # the critic terms weigh nothing: no critic pass
            xr, fx, fxr = reconstruct_image(config, state, x), None, None
        else:
            xr, fx, fxr, _ = reconstruct(config, state, x)
        return {"e_loss": jax.vmap(one)(x, xr, fx, fxr)}

    return validate
