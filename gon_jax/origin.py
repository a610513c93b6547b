"""The GON step (docs/METHODS.md 2.1): the latent is minus the gradient of the loss at z0 = 0.

  z0 = 0 (B, nz);  z = -d L_inner / d z at z0;  L_outer = L(F(z), x)
and F is trained on d L_outer / d params, second order through z (z is a function of the
parameters). L_inner and L_outer are the same loss (gon_jax.losses).

Latent scale. Every GON loss is a batch mean of per-sample terms, so the batch-mean
gradient gives z_i = -(1/B) d term_i / d z_i; for the conv GON's loss (mean over B, H, W of
the channel sum) that is z_i = -(1/(B*H*W)) d/dz_i sum_hw ||F(z_i) - x_i||^2. The latent
therefore shrinks with the batch size. latent_scaling='per_sample' computes each z_i from
a batch of one (vmap of grad) and divides by the same B (or by `latent_batch_size` when
given), so it reproduces the batch-mean scale exactly whenever the samples are independent
(no BatchNorm, or BatchNorm on running statistics). With BatchNorm in training mode the
batch-mean gradient couples the samples through the batch statistics (and each
per-sample pass normalises with its own statistics), so the two modes then differ.

BatchNorm (conv and variational GON). As in the reference both passes run in training
mode: each normalises with its own batch statistics and each updates the running
statistics, inner pass first, outer pass second (the reference calls F twice per step in
train mode, so PyTorch updates running_mean/var twice, in that order). At z0 = 0 every
sample has the same first-layer activations, so the first BatchNorm sees zero batch
variance and the inner gradient passes through it scaled by 1/sqrt(eps); that is the
reference's behaviour and is kept.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.torch_layers import check_choice
from gon_jax import variants
from gon_jax.losses import gon_loss
from gon_jax.variational import REPARAM_RNG

Array = jax.Array

LATENT_SCALINGS = ("batch_mean", "per_sample")


def default_loss_kind(model: nn.Module) -> str:
    """The loss a GON model trains with (its variant's, gon_jax/variants.py): conv
    'mse_sum_channels', implicit 'siren_sum_pixels', variational 'vae_bce_kl'."""
    found = variants.find(model)
    if found is None:
        raise ValueError(f"no GON loss known for {type(model).__name__}; pass loss_kind explicitly")
    if not found.is_gon:
        raise ValueError(f"{type(model).__name__} is not a GON: it has no gradient-origin latent")
    return found.loss_kind


def origin_latent(decode_fn: Callable[..., Any], x: Array, nz: int, *,
                  loss_kind: str = "mse_sum_channels", latent_scaling: str = "batch_mean",
                  latent_batch_size: int | None = None, rng: Array | None = None,
                  has_aux: bool = False) -> Array | tuple[Array, Any]:
    """z = -d L_inner / d z at z = 0. x (B, H, W, C) -> z (B, nz) (and aux).

    decode_fn(z) -> model outputs (an image or (recon, mu, logvar)), or (outputs, aux) when
    has_aux; called as decode_fn(z, rng) when rng is given. L_inner = gon_loss(loss_kind).
    latent_scaling: 'batch_mean' differentiates the batch loss (each z_i carries 1/B);
    'per_sample' differentiates each sample's loss on a batch of one (vmap; decode_fn then
    sees batches of one, with rng split per sample, and aux gets a leading (B,) axis) and
    divides by B. latent_batch_size, when given, replaces that B (batch_mean: z * B /
    latent_batch_size), so a latent does not depend on the size of the batch it came in.
    """
    check_choice(latent_scaling, LATENT_SCALINGS, "latent_scaling")
    b = x.shape[0]
    if latent_batch_size is not None and (not isinstance(latent_batch_size, int) or latent_batch_size < 1):
        raise ValueError(f"latent_batch_size must be a positive int, got {latent_batch_size!r}")
    scale_b = b if latent_batch_size is None else latent_batch_size

    def inner_loss(z: Array, x_: Array, key: Array | None) -> Any:
        out = decode_fn(z) if key is None else decode_fn(z, key)
        if has_aux:
            out, aux = out
            return gon_loss(loss_kind, out, x_), aux
        return gon_loss(loss_kind, out, x_)

    grad_fn = jax.grad(inner_loss, has_aux=has_aux)
    if latent_scaling == "batch_mean":
        g = grad_fn(jnp.zeros((b, nz), x.dtype), x, rng)
        scale = b / scale_b
    else:
        keys = None if rng is None else jax.random.split(rng, b)

        def one(x_i: Array, key: Array | None) -> Any:
            res = grad_fn(jnp.zeros((1, nz), x.dtype), x_i[None], key)
            return (res[0][0], res[1]) if has_aux else res[0]

        g = jax.vmap(one)(x, keys)
        scale = 1.0 / scale_b
    if has_aux:
        g, aux = g
        return -scale * g, aux
    return -scale * g


def _decode(model: nn.Module, params: Any, batch_stats: Any, z: Array, key: Array | None = None, *,
            train: bool, update_stats: bool) -> tuple[Any, Any]:
    """Applies the model to z; returns (outputs, batch_stats after this pass)."""
    variables = {"params": params}
    if batch_stats is not None:
        variables["batch_stats"] = batch_stats
    kwargs = {"rngs": {REPARAM_RNG: key}} if key is not None else {}
    if update_stats:
        out, updates = model.apply(variables, z, train=train, mutable=["batch_stats"], **kwargs)
        return out, updates["batch_stats"]
    return model.apply(variables, z, train=train, **kwargs), batch_stats


def gon_loss_and_updates(variables: Any, x: Array, *, model: nn.Module, loss_kind: str | None = None,
                         train: bool = True, rng: Array | None = None, latent_scaling: str = "batch_mean",
                         latent_batch_size: int | None = None,
                         stop_gradient_through_latent: bool = False) -> tuple[Array, tuple[Any, Array, Array]]:
    """One GON step's loss; differentiate w.r.t. variables['params'] (see gon_value_and_grad).

    variables: {'params': ..., 'batch_stats': ... (conv/variational GON)}; x (B, H, W, C).
    loss_kind: None = the model's own (default_loss_kind). train=True: BatchNorm on batch
    statistics and the running statistics updated by the inner, then the outer pass; the
    variational GON samples its latent (needs rng; the inner and outer pass get independent
    keys). train=False: running statistics, no updates (new_batch_stats is the input's).
    stop_gradient_through_latent=True cuts the second-order path (z treated as a constant);
    it exists to show that path matters, never to train.
    Returns (loss, (new_batch_stats or None, z (B, nz), recon (B, H, W, C))).
    """
    kind = default_loss_kind(model) if loss_kind is None else loss_kind
    params, stats = variables["params"], variables.get("batch_stats")
    update_stats = train and stats is not None
    inner_key, outer_key = (None, None) if rng is None else tuple(jax.random.split(rng))
    decode = functools.partial(_decode, model, params, train=train, update_stats=update_stats)

    z, stats = origin_latent(functools.partial(decode, stats), x, model.nz, loss_kind=kind,
                             latent_scaling=latent_scaling, latent_batch_size=latent_batch_size,
                             rng=inner_key, has_aux=True)
    if latent_scaling == "per_sample" and stats is not None:
        # Each per-sample pass returned its own running-statistics update (leading (B,) axis);
        # their mean is the batch update of the running mean, while for the running variance it
        # omits the between-sample spread (documented departure of the per_sample mode).
        stats = jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)
    if stop_gradient_through_latent:
        z = jax.lax.stop_gradient(z)
    outputs, stats = decode(stats, z, outer_key)
    loss = gon_loss(kind, outputs, x)
    recon = outputs[0] if isinstance(outputs, tuple) else outputs
    return loss, (stats, z, recon)


def gon_value_and_grad(variables: Any, x: Array, **kwargs: Any) -> tuple[tuple[Array, tuple[Any, Array, Array]], Any]:
    """((loss, (new_batch_stats, z, recon)), grads w.r.t. variables['params']) of gon_loss_and_updates."""

    def loss_fn(params: Any) -> tuple[Array, tuple[Any, Array, Array]]:
        return gon_loss_and_updates({**variables, "params": params}, x, **kwargs)

    return jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
