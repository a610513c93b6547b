"""GON and CAE training and scoring: the `METHOD` the shared program runs (docs/METHODS.md 2).

One stage 'gon': each step encodes the batch with the gradient origin (z = -grad at 0),
decodes, and trains on the outer loss through z (second order). The CAE baseline shares the
program with a plain reconstruction step. State: {'model': variables, 'opt': optax state},
plus, for the models with BatchNorm, 'context': the B_train - 1 training images that
'context' scoring encodes each test image with (taken from the training data when a run
starts and saved in every checkpoint, so scoring never reads the training data again).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
import optax

from anomaly_core import data as data_lib
from anomaly_core import settings
from anomaly_core.networks.smoothing import gaussian_smooth
from anomaly_core.program import method
from anomaly_core.training.train_loop import Stage
from gon_jax.build import build_gon_model, describe as describe_model, init_variables, model_rules
from gon_jax.losses import cae_mse_loss
from gon_jax.origin import LATENT_SCALINGS, gon_value_and_grad
from gon_jax.scoring import reconstruction_errors
from gon_jax.torch_networks import TORCH_NETWORKS
from gon_jax.variants import variant


def optimizer(config) -> optax.GradientTransformation:
    t = config.train
    return optax.adam(t.lr, b1=t.betas[0], b2=t.betas[1])


def has_context(config) -> bool:
    """Whether the state carries a scoring context: the models with BatchNorm (conv and
    variational GON), whatever the evaluation settings, so they may change after training."""
    return variant(config.model).batch_norm


def init_state(config, rng) -> dict[str, Any]:
    """{'model', 'opt'} (and a zero 'context' placeholder, filled by fill_state)."""
    variables = init_variables(config.model, rng)
    state = {"model": variables, "opt": optimizer(config).init(variables["params"])}
    if has_context(config):
        d = config.data
        state["context"] = jax.numpy.zeros(
            (config.train.batch_size - 1, d.image_size, d.image_size, d.channels), jax.numpy.float32)
    return state


def fill_state(config, state: dict[str, Any], train: data_lib.Split) -> dict[str, Any]:
    """Sets state['context'] to the first B_train - 1 images of the training split (eval transform)."""
    if not has_context(config):
        return state
    return {**state, "context": scoring_context(config, train)}


def train_step(config, state, batch, rng):
    model = build_gon_model(config.model)
    x = batch["image"]
    variables = state["model"]
    if not variant(config.model).is_gon:  # the CAE: a plain reconstruction step
        def loss_fn(p):
            return cae_mse_loss(model.apply({**variables, "params": p}, x, train=True), x), None

        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        stats, z_norm = variables.get("batch_stats"), None
    else:
        (loss, (stats, z, _)), grads = gon_value_and_grad(
            variables, x, model=model, train=True,
            rng=rng if variant(config.model).samples_latent else None,
            latent_scaling=config.train.latent_scaling,
        )
        z_norm = jax.numpy.mean(jax.numpy.linalg.norm(z, axis=-1))
    tx = optimizer(config)
    updates, opt = tx.update(grads, state["opt"], variables["params"])
    new_vars = {**variables, "params": optax.apply_updates(variables["params"], updates)}
    if stats is not None:
        new_vars["batch_stats"] = stats
    metrics = {"loss": loss}
    if z_norm is not None:
        metrics["latent_norm"] = z_norm
    return {**state, "model": new_vars, "opt": opt}, metrics


def scoring_context(config, train: data_lib.Split) -> np.ndarray:
    """B_train - 1 fixed normal training images (eval transform), (B_train - 1, H, W, C), in
    whose company each test image is encoded, so BatchNorm sees training-like batch
    statistics (gon_jax/scoring.py)."""
    need = config.train.batch_size - 1
    if len(train) < need:
        raise ValueError(f"bn_statistics='context' needs config.train.batch_size - 1 = {need} training images, "
                         f"the train split has {len(train)}")
    images = []
    for batch in data_lib.eval_batches(config.data, train, batch_size=min(need, 256)):
        images.append(batch["image"][batch["valid"]])
        if sum(len(i) for i in images) >= need:
            break
    return np.concatenate(images)[:need]


def uses_context(config) -> bool:
    """Whether scoring encodes test images in the company of state['context']."""
    return has_context(config) and config.eval.scoring == "gradient_latent" and config.eval.bn_statistics == "context"


# config.eval.image_score: the GON reference's only one, the per-image mean squared error.
IMAGE_SCORES = ("mean_squared_error",)


def score_fn(config):
    model = build_gon_model(config.model)
    ev = config.eval
    latent_batch_size = None if uses_context(config) else config.train.batch_size
    sigma = float(ev.smoothing_sigma)

    def score(state, batch):
        context = state["context"] if uses_context(config) else None
        per_image, per_pixel, recon = reconstruction_errors(
            state["model"], batch["image"], model=model,
            scoring=ev.scoring if variant(config.model).is_gon else "gradient_latent",
            bn_statistics=ev.bn_statistics, context=context, latent_batch_size=latent_batch_size,
            chunk_size=ev.chunk_size or None,
        )
        # The image score stays the unsmoothed mean squared error (the GON reference's score).
        return {"image_score": per_image, "anomaly_map": gaussian_smooth(per_pixel, sigma),
                "reconstruction": recon}

    return score


def validation_fn(config):
    if not config.checkpoint.select_best:
        return None
    score = score_fn(config)
    return lambda state, batch: {"val_score": score(state, batch)["image_score"]}


def settings_rules(config) -> list[settings.Rule]:
    """The constraints of the GON / CAE settings (the shared ones: program.shared_rules)."""
    n, c = settings.number, settings.choice
    return [
        *model_rules(config.model),
        settings.integer("config.train.steps", 1), n("config.train.lr", 0, low_open=True),
        settings.numbers("config.train.betas", 2, 0, 1, high_open=True),
        c("config.train.latent_scaling", LATENT_SCALINGS),
        # config.eval.scoring and bn_statistics: checked where scoring reads them, by tracing the
        # score function before training (program.preflight).
        settings.integer("config.eval.chunk_size", 0),
        settings.choice("config.eval.image_score", IMAGE_SCORES),
        settings.boolean("config.checkpoint.select_best"),
    ]


def stages(config) -> list[Stage]:
    return [Stage(config.model.kind, config.train.steps, functools.partial(train_step, config))]


METHOD = method.Method(
    name="gon",
    training=method.Training(init_state=init_state, stages=stages, validation=validation_fn,
                             best_metric="val_score"),
    scoring=method.Scoring(score=score_fn),
    checkpoints=method.Checkpoints(
        # The saved scoring context holds B_train - 1 images.
        recorded_settings=lambda c: {"config.train.batch_size": c.train.batch_size} if has_context(c) else {},
        filled_keys=("context",), fill_state=fill_state),
    settings=method.MethodSettings(
        rules=settings_rules,
        required=("config.model.kind", "config.train.steps", "config.train.latent_scaling",
                  "config.eval.scoring", "config.eval.bn_statistics"),
        example_config="configs/gon_quickstart.py",
        files=(("gon_jax/build.py", {"default_gon_model_config": "model"}), ("configs/gon_base.py", {}))),
    # A config.json written before these settings existed was scored unsmoothed, by the mean
    # squared error.
    legacy=method.Legacy(unrecorded_settings={"config.eval.smoothing_sigma": 0.0,
                                              "config.eval.image_score": "mean_squared_error"}),
    describe=lambda config: describe_model(config.model),
    torch=TORCH_NETWORKS,
)
