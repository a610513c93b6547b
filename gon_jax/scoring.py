"""GON anomaly scores (docs/METHODS.md 2.6): encode each image with the gradient step, score the
reconstruction. Thresholds and AUROC live in anomaly_core (thresholds.py, metrics.py).

  s(x) = mean over (H, W, C) of (F(z(x)) - x)^2,   z(x) = -d L_inner / d z at 0,
  per-pixel map = mean over channels of the squared error.
scoring='reference_zero_latent' scores F(0) (eval mode) for every input instead, as the
reference notebooks do.

What "eval mode" means for the inner gradient (models with BatchNorm). Training computes
z for a sample inside a batch of B training images with BatchNorm on batch statistics, so
the encoder depends on the batch (BatchNorm's backward centres the gradient over the batch)
and its scale is 1/B. Three choices, `bn_statistics`:
  'context' (default): each test image is encoded and decoded exactly as the training step
      would treat it inside a batch made of it plus a fixed `context` of B_train - 1 normal
      training images (BatchNorm on that batch's statistics, no running-statistics update,
      latent scale 1/B_train). A score then depends only on the image and the fixed
      context, never on the other test images, and the encoder is the trained one. Costs
      B_train forward/backward passes per test image.
  'running': BatchNorm on running statistics in both passes. Independent of the batch but
      NOT the trained encoder: at z0 the first BatchNorm saw zero batch variance in
      training, so the inner gradient was amplified by 1/sqrt(eps); with the running
      variance it is not, z collapses towards 0 and the score becomes the F(0) score. The
      running statistics also mix the inner (origin) and outer passes' statistics, since
      both update them. Measured on a toy 16x16 conv GON (600 steps, batch 32): with
      'running' the latent |z| is 3e-4 and the normal-image MSE 0.141 (the F(0) score);
      with 'context' |z| is 2.1 and the MSE 0.0017, as in training.
  'batch': BatchNorm on the statistics of the test batch itself (what the training step
      does to its batch); scores depend on which images share a batch.
For models without BatchNorm (implicit GON) samples are independent; the latent scale is
1/latent_batch_size (the training batch size), so z matches the latents seen in training.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.torch_layers import check_choice
from gon_jax import variants
from gon_jax.origin import default_loss_kind, origin_latent

Array = jax.Array

SCORINGS = ("gradient_latent", "reference_zero_latent")
BN_STATISTICS = ("context", "running", "batch")


def _decoder(model: nn.Module, variables: Any, train_bn: bool):
    """z -> model outputs; BatchNorm on batch statistics when train_bn (updates discarded).

    The variational GON always decodes z' = mu here (no sampling at scoring time).
    """
    registered = variants.find(model)
    extra = {"sample_latent": False} if registered is not None and registered.samples_latent else {}

    def decode(z: Array) -> Any:
        if train_bn:
            return model.apply(variables, z, train=True, mutable=["batch_stats"], **extra)[0]
        return model.apply(variables, z, train=False, **extra)

    return decode


def _image(outputs: Any) -> Array:
    return outputs[0] if isinstance(outputs, tuple) else outputs


def reconstruction_errors(variables: Any, x: Array, *, model: nn.Module, scoring: str = "gradient_latent",
                          bn_statistics: str = "context", context: Array | None = None,
                          latent_batch_size: int | None = None, loss_kind: str | None = None,
                          chunk_size: int | None = None) -> tuple[Array, Array, Array]:
    """Per-image and per-pixel squared reconstruction errors of x (B, H, W, C).

    model: a GON (ConvDecoder, ImplicitGON, VariationalGON) or the ConvAutoencoder (which
    reconstructs x directly; scoring must be 'gradient_latent', the other options are unused).
    bn_statistics: see the module docstring; 'context' needs context (B_train - 1, H, W, C)
    normal training images and sets the latent scale to 1/(len(context) + 1); 'running',
    'batch' and BatchNorm-free models need latent_batch_size (the training batch size),
    which defaults to len(context) + 1 when a context is given.
    loss_kind: inner loss; None = the model's training loss. chunk_size: test images
    encoded in parallel in 'context' mode (None = one at a time, least memory).
    Returns (per_image (B,), per_pixel (B, H, W), recon (B, H, W, C)).
    """
    check_choice(scoring, SCORINGS, "config.eval.scoring")
    if x.ndim != 4:
        raise ValueError(f"reconstruction_errors expects images (B, H, W, C), got shape {x.shape}")
    registered = variants.find(model)  # None: a decoder of the caller's own, a GON
    if registered is not None and not registered.is_gon:
        if scoring != "gradient_latent":
            raise ValueError(f"config.eval.scoring={scoring!r} is a GON option; the CAE reconstructs x directly")
        recon = model.apply(variables, x, train=False)
    elif scoring == "reference_zero_latent":
        recon = _image(_decoder(model, variables, False)(jnp.zeros((x.shape[0], model.nz), x.dtype)))
    else:
        recon = _gradient_latent_recon(variables, x, model, bn_statistics, context, latent_batch_size,
                                       default_loss_kind(model) if loss_kind is None else loss_kind, chunk_size)
    if recon.shape != x.shape:
        raise ValueError(f"reconstruction shape {recon.shape} differs from the images' {x.shape}: "
                         "check config.model.image_size / channels against the data")
    sq = jnp.square(recon - x)
    return jnp.mean(sq, axis=(1, 2, 3)), jnp.mean(sq, axis=-1), recon


def _gradient_latent_recon(variables: Any, x: Array, model: nn.Module, bn_statistics: str,
                           context: Array | None, latent_batch_size: int | None, loss_kind: str,
                           chunk_size: int | None) -> Array:
    check_choice(bn_statistics, BN_STATISTICS, "config.eval.bn_statistics")
    has_bn = "batch_stats" in variables
    if has_bn and bn_statistics == "context":
        if context is None or context.ndim != 4 or context.shape[1:] != x.shape[1:] or context.shape[0] < 1:
            raise ValueError("bn_statistics='context' needs context: (B_train - 1, H, W, C) normal training "
                             f"images shaped like x {x.shape[1:]}, got "
                             f"{None if context is None else context.shape}")
        if latent_batch_size is not None and latent_batch_size != context.shape[0] + 1:
            raise ValueError(f"latent_batch_size={latent_batch_size} contradicts the context of "
                             f"{context.shape[0]} images (batch size {context.shape[0] + 1})")
        decode = _decoder(model, variables, True)

        def in_context(x_i: Array) -> Array:
            batch = jnp.concatenate([x_i[None], context.astype(x.dtype)])
            z = origin_latent(decode, batch, model.nz, loss_kind=loss_kind)
            return _image(decode(z))[0]

        return jax.lax.map(in_context, x, batch_size=chunk_size)
    if latent_batch_size is None and context is not None:
        latent_batch_size = context.shape[0] + 1  # the batch size the context stands for
    if latent_batch_size is None:
        raise ValueError("gradient-latent scoring needs latent_batch_size = the training batch size "
                         "(config.train.batch_size), so a latent has the scale it had in training")
    decode = _decoder(model, variables, has_bn and bn_statistics == "batch")
    z = origin_latent(decode, x, model.nz, loss_kind=loss_kind, latent_batch_size=latent_batch_size)
    return _image(decode(z))
