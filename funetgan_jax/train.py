"""f-UNetGAN as the shared program runs it: the `METHOD` (its stages, scoring, settings and
checkpoint hooks), assembled from the package's parts: funetgan_jax/train_state.py (state,
optimisers, moving average of G), updates.py (the training steps), map_statistics.py,
score_fns.py (score and validation functions), networks.py (eval-mode passes).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from anomaly_core import settings
from anomaly_core.program import method
from anomaly_core.training.train_loop import Stage
from funetgan_jax import losses
from funetgan_jax.build import describe as describe_models
from funetgan_jax.build import model_rules
from funetgan_jax.map_statistics import fill_map_stats, map_stats_missing
from funetgan_jax.mixing import CONSISTENCY_MODES, INTERPOLATION_MODES
from funetgan_jax.networks import generator_variables, networks
from funetgan_jax.score_fns import host_score_fn, score_fn, validation_fn
from funetgan_jax.torch_names import TORCH_NETWORKS
from funetgan_jax.train_state import EMA_RULE, ENCODER_OPTIMIZERS, init_state
from funetgan_jax.updates import adversarial_step, encoder_step


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


METHOD = method.Method(
    name="funetgan",
    training=method.Training(
        init_state=init_state, stages=stages, validation=validation_fn, best_metric="e_loss",
        validation_stage="encoder", progress_images=progress_images_fn, health_limits=health_limits),
    scoring=method.Scoring(score=score_fn, host_score=host_score_fn),
    checkpoints=method.Checkpoints(
        recorded_settings=lambda config: {f"config.model.{k}": v for k, v in config.model.items() if k != "dtype"},
        filled_keys=("map_stats",), fill_state=fill_map_stats, refill=map_stats_missing),
    settings=method.MethodSettings(
        rules=settings_rules,
        required=("config.model.z_dim", "config.model.width", "config.model.spectral_norm",
                  "config.train.n_critic", "config.train.generator_steps", "config.train.encoder_steps",
                  "config.train.kappa", "config.eval.kappa", "config.eval.image_score"),
        example_config="configs/quickstart.py",
        files=(("funetgan_jax/build.py", {"default_model_config": "model"}), ("configs/funetgan_base.py", {}))),
    # Checkpoints written before the settings were recorded all used torch's spectral norm; a
    # config.json written before the others existed was scored (and trained) without what they add.
    legacy=method.Legacy(unrecorded_settings={
        "config.model.spectral_norm": "torch", "config.train.g_ema_decay": 0.0,
        "config.train.encoder_target": "logits", "config.train.latent_weight": 0.0, "config.train.image_every": 0,
        "config.eval.critic_weight": 0.0, "config.eval.refine_steps": 0, "config.eval.refine_lr": 0.05}),
    describe=lambda config: describe_models(config.model),
    torch=TORCH_NETWORKS,
)
