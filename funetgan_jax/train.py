"""f-UNetGAN training stages and scoring: the `METHOD` the shared program runs.

Stage 1 'adversarial' (docs/METHODS.md 1.5): each jitted call runs n_critic discriminator
updates (a `lax.scan` over n_critic batches) followed by one generator update with the last
discriminator step's z. Stage 2 'encoder' (1.6): the encoder trains through frozen G and D.
The state is one pytree: {'g', 'd', 'e'} variables (params, batch_stats, spectral),
{'opt_g', 'opt_d', 'opt_e'} optimiser states and 'map_stats' (running
statistics of the anomaly map's residual and critic terms on training images, gathered by
the encoder stage when `config.eval.critic_weight` > 0; they scale that critic term); with
`config.train.g_ema_decay` > 0 also 'g_ema', an exponential moving average of G's parameters
(with G's current statistics), which the encoder stage, scoring and the sample grids then use
instead of G.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from anomaly_core import parallel, program, settings
from anomaly_core.train_loop import Stage
from funetgan_jax import losses, scoring
from funetgan_jax.build import build_discriminator, build_encoder, build_generator, describe as describe_models
from funetgan_jax.build import model_rules
from funetgan_jax.mixing import CONSISTENCY_MODES, INTERPOLATION_MODES
from funetgan_jax.torch_names import TORCH_NETWORKS

MUTABLE = ("batch_stats", "spectral")


ENCODER_OPTIMIZERS = ("adam", "rmsprop")
EMA_RULE = settings.number("config.train.g_ema_decay", 0, 1, high_open=True)


def settings_rules(config) -> list[settings.Rule]:
    """The constraints of the f-UNetGAN settings (the shared ones: program.shared_rules)."""
    n, i, c = settings.number, settings.integer, settings.choice
    return [
        *model_rules(),
        i("config.train.n_critic", 1), i("config.train.generator_steps", 0), i("config.train.encoder_steps", 0),
        # One stage may be empty (encoder_steps=0: the adversarial stage only), not both: an
        # untrained network would be evaluated like a trained one.
        settings.Rule("config.train.encoder_steps", "an integer >= 1 when config.train.generator_steps is 0",
                      lambda v: v >= 1 or config.train.generator_steps >= 1),
        n("config.train.lr_g", 0, low_open=True), n("config.train.lr_d", 0, low_open=True),
        n("config.train.lr_e", 0, low_open=True),
        settings.numbers("config.train.betas", 2, 0, 1, high_open=True),
        c("config.train.encoder_optimizer", ENCODER_OPTIMIZERS),
        n("config.train.lambda_gp", 0), n("config.train.lambda_mix", 0),
        c("config.train.consistency", CONSISTENCY_MODES), c("config.train.interpolation", INTERPOLATION_MODES),
        c("config.train.pixel_reduction", losses.PIXEL_REDUCTIONS), n("config.train.kappa", 0),
        c("config.train.encoder_target", losses.ENCODER_TARGETS),
        n("config.train.latent_weight", 0),
        settings.boolean("config.train.detach_critic"), EMA_RULE, i("config.train.image_every", 0),
        n("config.eval.kappa", 0), n("config.eval.critic_weight", 0),
        i("config.eval.refine_steps", 0), n("config.eval.refine_lr", 0, low_open=True),
        # config.eval.image_score: checked by tracing the score function (preflight)
    ]


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


def networks(config):
    return build_generator(config.model), build_discriminator(config.model), build_encoder(config.model)


def _split(variables) -> tuple[Any, dict]:
    """(params, the other collections) of a variables dict."""
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


def init_state(config, rng) -> dict[str, Any]:
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
    if _ema_decay(config) > 0:
        state["g_ema"] = g
    return state


def initial_map_stats() -> dict[str, jax.Array]:
    """Placeholder map statistics (both terms: mean 0, variance 1) until the encoder stage
    gathers them."""
    return {"residual_mean": jnp.float32(0.0), "residual_sq": jnp.float32(1.0),
            "critic_mean": jnp.float32(0.0), "critic_sq": jnp.float32(1.0)}


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
    from anomaly_core import data as data_lib  # pylint: disable=g-import-not-at-top

    moments = jax.jit(lambda s, x: batch_map_stats(config, s, x))
    sums, count = jax.tree.map(lambda v: 0.0 * v, initial_map_stats()), 0
    for batch in data_lib.eval_batches(config.data, train, batch_size=int(config.eval.batch_size)):
        x = np.asarray(batch["image"])[np.asarray(batch["valid"], bool)]
        if len(x):
            sums = jax.tree.map(lambda t, v, n=len(x): t + n * v, sums, moments(state, jnp.asarray(x)))
            count += len(x)
    return {**state, "map_stats": jax.tree.map(lambda t: t / count, sums) if count else initial_map_stats()}


def _ema_decay(config) -> float:
    settings.check(config, [EMA_RULE])
    return float(config.train.g_ema_decay)


def generator_variables(state) -> dict[str, Any]:
    """The generator used after training: the moving average 'g_ema' when kept, else 'g'."""
    return state.get("g_ema", state["g"])


def update_ema(config, ema_vars, g_vars, g_updates: jax.Array) -> dict[str, Any]:
    """ema <- d * ema + (1 - d) * params after `g_updates` (>= 1) generator updates, with
    d = min(g_ema_decay, (1 + n) / (10 + n)) so early averages do not lag far behind;
    the statistics (batch_stats, spectral) are G's current ones."""
    n = jnp.asarray(g_updates, jnp.float32)
    d = jnp.minimum(_ema_decay(config), (1.0 + n) / (10.0 + n))
    params = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_vars["params"], g_vars["params"])
    return {**g_vars, "params": params}


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
    g_params, g_state = _split(g_vars)
    fake, g_state = G.apply({"params": g_params, **g_state}, z, train=True, mutable=MUTABLE)
    d_params, d_state = _split(d_vars)

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
    g_params, g_state = _split(g_vars)
    d_params, d_state = _split(d_vars)

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


def encoder_target(config) -> str:
    """What of D the encoder stage and the score compare: 'features' | 'logits' (losses.critic_targets)."""
    return config.train.encoder_target


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
        l_latent = jnp.mean(jnp.square(z_hat.astype(jnp.float32) - z))
        loss = loss + weight * l_latent
        metrics = {**metrics, "e_loss": loss, "l_latent": l_latent}
    return loss, (metrics, e_state)


def encoder_step(config, state, batch, rng):
    tx = optimizers(config)
    e_params, e_state = _split(state["e"])
    (_, (metrics, e_state)), grads = jax.value_and_grad(
        lambda p: encoder_objective(config, state, p, e_state, batch["image"], rng), has_aux=True
    )(e_params)
    updates, opt_e = tx["e"].update(grads, state["opt_e"], e_params)
    new_state = dict(state)
    new_state.update(e={"params": optax.apply_updates(e_params, updates), **e_state}, opt_e=opt_e)
    if gathers_map_stats(config):
        new_state["map_stats"] = update_map_stats(config, new_state, batch["image"], encoder_updates(opt_e))
    return new_state, metrics


def _generate_fn(config, state) -> Callable[[jax.Array], jax.Array]:
    """z (B, z_dim) -> G(z) (B, H, W, C), eval mode (the moving average of G when kept)."""
    G, _, _ = networks(config)
    return lambda z: G.apply(generator_variables(state), z, train=False)


def reconstruct_image(config, state, x, refine_steps: int = 0, refine_lr: float = 0.05):
    """xr = G(E(x)) (B, H, W, C) in eval mode; refine_steps > 0: z = E(x) is first refined by
    that many Adam steps on ||G(z) - x||^2 (scoring.refine_latent)."""
    _, _, E = networks(config)
    generate = _generate_fn(config, state)
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
    update = jax.jit(lambda state, x, carry: scoring.refine_update(_generate_fn(config, state), x, carry, lr),
                     donate_argnums=2)
    finish = jax.jit(lambda state, batch, z: _scores_of(config, state, batch, _generate_fn(config, state)(z)),
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


PROGRESS_SEED = 1234  # the fixed latents of the sample grid


def progress_images_fn(config):
    """Progress pictures, each (rows, columns, H, W, C). Adversarial stage: G(z) at 16 fixed
    latents, (2, 8). Encoder stage: the fixed validation images x (N, H, W, C) above their
    reconstructions G(E(x)), (2, N). Eval mode."""
    G, _, E = networks(config)
    z = jax.random.normal(jax.random.key(PROGRESS_SEED), (16, config.model.z_dim), jnp.float32)

    def images(state, stage: str, x):
        g = generator_variables(state)
        if stage == "adversarial":
            samples = G.apply(g, z, train=False)
            return {"samples": samples.reshape(2, 8, *samples.shape[1:])}
        xr = G.apply(g, E.apply(state["e"], x, train=False), train=False).astype(x.dtype)
        return {"reconstructions": jnp.stack([x, xr])}

    return images


def health_limits(config) -> tuple[tuple[str, float, str], ...]:  # noqa: ARG001 - same for every config
    critic = ("the critic's input-gradient norm is about 1 + sqrt(penalty), far from its target 1: "
              "the critic is not near 1-Lipschitz, so the adversarial losses do not yet measure anything")
    return (("gp_enc", 100.0, critic), ("gp_dec", 100.0, critic))


def stages(config) -> list[Stage]:
    t = config.train
    return [
        Stage("adversarial", t.generator_steps, functools.partial(adversarial_step, config),
              batches_per_step=t.n_critic),
        Stage("encoder", t.encoder_steps, functools.partial(encoder_step, config)),
    ]


METHOD = program.Method(
    name="funetgan",
    init_state=init_state,
    stages=stages,
    score=score_fn,
    host_score=host_score_fn,
    validation=validation_fn,
    best_metric="e_loss",
    validation_stage="encoder",
    progress_images=progress_images_fn,
    health_limits=health_limits,
    recorded_settings=lambda config: {f"config.model.{k}": v for k, v in config.model.items() if k != "dtype"},
    # Checkpoints written before the settings were recorded all used torch's spectral norm; a
    # config.json written before the others existed was scored (and trained) without what they add.
    unrecorded_settings={"config.model.spectral_norm": "torch", "config.train.g_ema_decay": 0.0,
                         "config.train.encoder_target": "logits", "config.train.latent_weight": 0.0, "config.train.image_every": 0,
                         "config.eval.critic_weight": 0.0, "config.eval.refine_steps": 0,
                         "config.eval.refine_lr": 0.05},
    required_settings=("config.model.z_dim", "config.model.width", "config.model.spectral_norm",
                       "config.train.n_critic", "config.train.generator_steps", "config.train.encoder_steps",
                       "config.train.kappa", "config.eval.kappa", "config.eval.image_score"),
    example_config="configs/quickstart.py",
    settings=settings_rules,
    fill_state=fill_map_stats,
    filled_keys=("map_stats",),
    refill=map_stats_missing,
    describe=lambda config: describe_models(config.model),
    torch=TORCH_NETWORKS,
    settings_files=(("funetgan_jax/build.py", {"default_model_config": "model"}), ("configs/funetgan_base.py", {})),
)

