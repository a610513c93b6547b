"""f-UNetGAN losses (docs/METHODS.md 1.5 adversarial stage, 1.6 encoder stage).

The networks enter only as callables, so this file does not depend on the modules.
A discriminator output is either `DiscriminatorOutput` (global_logit (B,), pixel_logits
(B, H, W, 1), global_features (B, F) | None, pixel_features (B, H, W, c) | None) or a plain
tuple: (global_logit, pixel_logits) for logits, (global_features, pixel_features) for
features.

Two layers:
- pure arithmetic on outputs that were already computed (`discriminator_loss`,
  `generator_loss`, `encoder_loss_terms`, `latent_regression_loss`), so a train step can run D separately on real,
  fake, mixed and interpolated batches and thread its `batch_stats` / `spectral` state
  through each forward in order (the reference also runs separate forwards, which fixes
  the BatchNorm statistics and the number of spectral-norm power iterations per step);
- wiring functions that take the networks (`gradient_penalties`,
  `discriminator_loss_from_networks`, `encoder_loss`).

Mixed precision: `logits_of` and `features_of` return at least float32, so every loss,
penalty norm and metric here is computed in float32 when the networks compute in bfloat16.

State-threading convention: a "stateful" callable is `fn(x, state) -> (output, state)`
and the wiring functions return `(loss, (metrics, state))`, the form
`jax.value_and_grad(..., has_aux=True)` expects.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from anomaly_core.networks.precision import at_least_f32
from anomaly_core.networks.torch_layers import check_choice
from funetgan_jax.mixing import consistency_mix, interpolation_weights

Array = jax.Array
Metrics = dict[str, Array]


def logits_of(out: Any) -> tuple[Array, Array]:
    """(global_logit (B,), pixel_logits (B, H, W, 1)) float32, from a DiscriminatorOutput or 2-tuple."""
    if hasattr(out, "global_logit"):
        return at_least_f32(out.global_logit), at_least_f32(out.pixel_logits)
    if isinstance(out, (tuple, list)) and len(out) == 2:
        return at_least_f32(out[0]), at_least_f32(out[1])
    raise TypeError(
        "a discriminator output must be a DiscriminatorOutput or a (global_logit, pixel_logits) "
        f"tuple, got {type(out).__name__}"
    )


def features_of(out: Any) -> tuple[Array, Array]:
    """(global_features (B, F), pixel_features (B, H, W, c)) float32, from a DiscriminatorOutput or 2-tuple."""
    if hasattr(out, "global_features"):
        feats = (out.global_features, out.pixel_features)
    elif isinstance(out, (tuple, list)) and len(out) == 2:
        feats = (out[0], out[1])
    else:
        raise TypeError(
            "discriminator features must be a DiscriminatorOutput or a (global_features, "
            f"pixel_features) tuple, got {type(out).__name__}"
        )
    if feats[0] is None or feats[1] is None:
        raise ValueError(
            "discriminator features are None: call the discriminator with its features "
            "requested (the encoder loss and the anomaly map need both feature tensors)"
        )
    return at_least_f32(feats[0]), at_least_f32(feats[1])


ENCODER_TARGETS = ("features", "logits")


def critic_targets(out: Any, target: str) -> tuple[Array, Array]:
    """What the encoder loss and the anomaly score compare of D(x) and D(xr): 'features'
    (f-AnoGAN izi_f: global_features (B, F), pixel_features (B, H, W, c)) or 'logits' (the
    original f-UNetGAN's encoder stage: global_logit as (B, 1), pixel_logits (B, H, W, 1)).
    out: a DiscriminatorOutput (with features for 'features')."""
    check_choice(target, ENCODER_TARGETS, "config.train.encoder_target")
    if target == "logits":
        return at_least_f32(out.global_logit[:, None]), at_least_f32(out.pixel_logits)
    return features_of(out)


PIXEL_REDUCTIONS = ("sum", "mean")


def _check_reduction(pixel_reduction: str) -> None:
    check_choice(pixel_reduction, PIXEL_REDUCTIONS, "config.train.pixel_reduction")


def pixel_reduce(pixel_logits: Array, pixel_reduction: str = "sum") -> Array:
    """Per-sample reduction of the pixel logits (B, H, W, 1) -> (B,).

    'sum' (the reference: its scale, and that of the decoder head's penalty, grows with
    H * W) or 'mean' (sum / (H * W): the decoder head on the scale of the global head
    whatever the image size).
    """
    _check_reduction(pixel_reduction)
    axes = tuple(range(1, pixel_logits.ndim))
    return jnp.sum(pixel_logits, axis=axes) if pixel_reduction == "sum" else jnp.mean(pixel_logits, axis=axes)


def _safe_norm(g: Array) -> Array:
    """Per-sample L2 norm over all non-batch axes, with a finite gradient at g = 0.

    sqrt has an infinite derivative at 0 (a critic whose input gradient vanishes, e.g. dead
    units, would give NaN parameter gradients); the double `where` keeps the value exact
    and makes the gradient 0 there.
    """
    sq = jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim)))
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def gradient_penalties(d_fn: Callable[[Array], Any], x_hat: Array, *, has_aux: bool = False,
                       pixel_reduction: str = "sum") -> Any:
    """WGAN-GP penalties of both discriminator heads at the interpolates x_hat (B, H, W, C).

    d_fn(x) returns a discriminator output (DiscriminatorOutput or (global_logit (B,),
    pixel_logits (B, H, W, 1))); with has_aux=True it returns (output, aux), e.g. the
    mutated `batch_stats` / `spectral` collections, and aux is handed back.
      GP_enc = mean_b (|| d sum_b D_enc(xh) / d xh_b ||_2 - 1)^2
      GP_dec = mean_b (|| d sum_b R_pixels D_dec(xh) / d xh_b ||_2 - 1)^2
    with the norm over (H, W, C) of each sample and R the `pixel_reduction` ('sum' |
    'mean') of the decoder head's loss. d_fn runs once: one forward (jax.vjp),
    then one backward per head through that forward. The gradients are of the batch
    SUM of the outputs, like
    PyTorch's autograd.grad(grad_outputs=ones); this equals the per-sample gradient only
    when samples do not interact inside D. BatchNorm in training mode (CBAM spatial gate,
    norm 'batch') couples them, so each sample's "gradient" then also carries the other
    samples' outputs; that is the reference's behaviour (docs/METHODS.md 1.1 note).
    The result is differentiable w.r.t. whatever d_fn closes over (second order).

    Returns (gp_enc, gp_dec), or ((gp_enc, gp_dec), aux) with has_aux=True.
    """

    def logits_fn(x: Array) -> Any:
        if has_aux:
            out, aux = d_fn(x)
            return logits_of(out), aux
        return logits_of(d_fn(x))

    if has_aux:
        (enc, dec), vjp_fn, aux = jax.vjp(logits_fn, x_hat, has_aux=True)
    else:
        (enc, dec), vjp_fn = jax.vjp(logits_fn, x_hat)
    # Two backward passes through the one forward. A single backward vmapped over both
    # cotangents was measured slower: the discriminator loss differentiates this graph again,
    # and the vmapped double backward batches the kernels (grouped convolutions). On the
    # quickstart D step (CPU) the D-loss gradient took 93 ms with two passes, 108 ms vmapped.
    (grad_enc,) = vjp_fn((jnp.ones_like(enc), jnp.zeros_like(dec)))
    _check_reduction(pixel_reduction)
    dec_weight = 1.0 if pixel_reduction == "sum" else 1.0 / (dec.size // dec.shape[0])
    (grad_dec,) = vjp_fn((jnp.zeros_like(enc), jnp.full_like(dec, dec_weight)))
    gp_enc = jnp.mean(jnp.square(_safe_norm(grad_enc) - 1.0))
    gp_dec = jnp.mean(jnp.square(_safe_norm(grad_dec) - 1.0))
    return ((gp_enc, gp_dec), aux) if has_aux else (gp_enc, gp_dec)


def discriminator_loss(
    d_real: Any,
    d_fake: Any,
    gp_enc: Array,
    gp_dec: Array,
    *,
    d_mixed: Any = None,
    mix_weight: Array | None = None,
    lambda_gp: float = 10.0,
    lambda_mix: float = 1.0,
    pixel_reduction: str = "sum",
) -> tuple[Array, Metrics]:
    """L_D = L_enc + L_dec + lambda_mix * L_mix (docs/METHODS.md 1.5) from computed outputs.

    d_real, d_fake: discriminator outputs on the real and fake batches; d_mixed: the output
    (or just its pixel logits) on the mixed batch.
    mix_weight: the REAL weight of the mix, broadcastable to the pixel logits:
    lam (B, 1, 1, 1) for Mixup, the mask M (B, H, W, 1) for CutMix. Leave d_mixed and
    mix_weight None for consistency 'none' (L_mix = 0).
      L_enc = mean D_enc(fake) - mean D_enc(real) + lambda_gp * GP_enc
      L_dec = mean_b R_pixels D_dec(fake) - mean_b R_pixels D_dec(real) + lambda_gp * GP_dec
      L_mix = mean (D_dec(mixed) - (w * D_dec(real) + (1 - w) * D_dec(fake)))^2
    R is `pixel_reduction`: 'sum' (reference) or 'mean' over the H * W pixels; the
    penalty gp_dec must have been computed with the same reduction. The consistency
    target is not detached (reference; U-Net GAN does the same), so L_mix
    also moves D_dec on the real and fake batches.
    Metrics: d_loss, l_enc, l_dec, l_mix, gp_enc, gp_dec and the critics' Wasserstein
    estimates wasserstein_enc = mean D_enc(real) - mean D_enc(fake), wasserstein_dec
    likewise with the per-sample pixel reductions.
    """
    enc_real, dec_real = logits_of(d_real)
    enc_fake, dec_fake = logits_of(d_fake)
    if dec_real.shape != dec_fake.shape:
        raise ValueError(f"pixel logits on real {dec_real.shape} and fake {dec_fake.shape} differ in shape")
    wasserstein_enc = jnp.mean(enc_real) - jnp.mean(enc_fake)
    wasserstein_dec = (jnp.mean(pixel_reduce(dec_real, pixel_reduction))
                       - jnp.mean(pixel_reduce(dec_fake, pixel_reduction)))
    l_enc = -wasserstein_enc + lambda_gp * gp_enc
    l_dec = -wasserstein_dec + lambda_gp * gp_dec

    if (d_mixed is None) != (mix_weight is None):
        raise ValueError("d_mixed and mix_weight go together: pass both (mixup/cutmix) or neither ('none')")
    if d_mixed is None:
        l_mix = jnp.zeros((), dec_real.dtype)
    else:
        dec_mixed = at_least_f32(d_mixed) if hasattr(d_mixed, "ndim") else logits_of(d_mixed)[1]
        if dec_mixed.shape != dec_real.shape:
            raise ValueError(f"pixel logits on mixed {dec_mixed.shape} and real {dec_real.shape} differ in shape")
        target = mix_weight * dec_real + (1.0 - mix_weight) * dec_fake
        l_mix = jnp.mean(jnp.square(dec_mixed - target))

    loss = l_enc + l_dec + lambda_mix * l_mix
    metrics = {
        "d_loss": loss,
        "l_enc": l_enc,
        "l_dec": l_dec,
        "l_mix": l_mix,
        "gp_enc": gp_enc,
        "gp_dec": gp_dec,
        "wasserstein_enc": wasserstein_enc,
        "wasserstein_dec": wasserstein_dec,
    }
    return loss, metrics


def discriminator_loss_from_networks(
    d_fn: Callable[[Array, Any], tuple[Any, Any]],
    state: Any,
    real: Array,
    fake: Array,
    rng: Array,
    *,
    consistency: str = "mixup",
    interpolation: str = "per_channel",
    lambda_gp: float = 10.0,
    lambda_mix: float = 1.0,
    pixel_reduction: str = "sum",
) -> tuple[Array, tuple[Metrics, Any]]:
    """The whole discriminator objective of one D step, given the stateful D callable.

    d_fn(x, state) -> (discriminator output, new state). real, fake: (B, H, W, C); fake is
    treated as a constant (the step trains D only). D runs on real, fake, mixed (unless
    consistency is 'none') and the interpolates, in that order, each forward starting
    from the state the previous one left. rng is split into (mix key, interpolation key)
    for `consistency_mix` and `interpolation_weights` (`interpolation`: 'per_channel' |
    'per_sample'). One set of interpolates
    serves both penalties (docs/METHODS.md 1.5; the reference's missing GP functions would
    have drawn one set per head).
    Returns (loss, (metrics, state)) as in `discriminator_loss`.
    """
    if real.ndim != 4 or real.shape != fake.shape:
        raise ValueError(f"real and fake must be NHWC batches of one shape, got {real.shape} and {fake.shape}")
    fake = jax.lax.stop_gradient(fake)
    k_mix, k_gp = jax.random.split(rng)
    mixed, mix_weight = consistency_mix(k_mix, real, fake, consistency)

    d_real, state = d_fn(real, state)
    d_fake, state = d_fn(fake, state)
    d_mixed = None
    if mixed is not None:
        d_mixed, state = d_fn(mixed, state)

    a = interpolation_weights(k_gp, real.shape[0], real.shape[-1], interpolation).astype(real.dtype)
    x_hat = a * real + (1.0 - a) * fake
    (gp_enc, gp_dec), state = gradient_penalties(lambda x, s=state: d_fn(x, s), x_hat, has_aux=True,
                                                 pixel_reduction=pixel_reduction)

    loss, metrics = discriminator_loss(
        d_real,
        d_fake,
        gp_enc,
        gp_dec,
        d_mixed=d_mixed,
        mix_weight=mix_weight,
        lambda_gp=lambda_gp,
        lambda_mix=lambda_mix,
        pixel_reduction=pixel_reduction,
    )
    return loss, (metrics, state)


def generator_loss(d_fake: Any, pixel_reduction: str = "sum") -> tuple[Array, Metrics]:
    """L_G = -mean D_enc(G(z)) - mean_b R_pixels D_dec(G(z)), R = `pixel_reduction` ('sum' | 'mean').

    d_fake: discriminator output on the generated batch. Metrics: g_loss, g_enc
    (= -mean D_enc), g_dec (= -mean_b R_pixels D_dec).
    """
    enc, dec = logits_of(d_fake)
    g_enc = -jnp.mean(enc)
    g_dec = -jnp.mean(pixel_reduce(dec, pixel_reduction))
    loss = g_enc + g_dec
    return loss, {"g_loss": loss, "g_enc": g_enc, "g_dec": g_dec}


def encoder_loss_terms(
    x: Array, xr: Array, feats_x: Any | None, feats_xr: Any | None, *, kappa: float = 1.0
) -> tuple[Array, Metrics]:
    """L_E = mean (xr - x)^2 + kappa * [mean (f_enc(xr) - f_enc(x))^2 + mean (f_dec(xr) - f_dec(x))^2].

    x, xr: (B, H, W, C); feats_*: (global_features (B, F), pixel_features (B, H, W, c)) or
    DiscriminatorOutputs carrying them, or both None when kappa is 0 (the critic terms weigh
    nothing; metrics then e_loss and l_img only). Each mean is over all elements. Pure arithmetic:
    where the gradient flows is decided by how the caller computed the inputs; use
    `encoder_loss`, which does that wiring.
    Metrics: e_loss, l_img, l_fenc, l_fdec.
    """
    if x.shape != xr.shape:
        raise ValueError(f"image {x.shape} and reconstruction {xr.shape} differ in shape")
    l_img = jnp.mean(jnp.square(xr - x))
    if feats_x is None or feats_xr is None:
        if kappa != 0 or (feats_x is None) != (feats_xr is None):
            raise ValueError(f"the critic's features of x and xr are needed for kappa={kappa} (give both or, "
                             "with kappa 0, neither)")
        return l_img, {"e_loss": l_img, "l_img": l_img}
    enc_x, dec_x = features_of(feats_x)
    enc_xr, dec_xr = features_of(feats_xr)
    if enc_x.shape != enc_xr.shape or dec_x.shape != dec_xr.shape:
        raise ValueError(
            f"features of x {(enc_x.shape, dec_x.shape)} and of xr {(enc_xr.shape, dec_xr.shape)} differ in shape"
        )
    l_fenc = jnp.mean(jnp.square(enc_xr - enc_x))
    l_fdec = jnp.mean(jnp.square(dec_xr - dec_x))
    loss = l_img + kappa * (l_fenc + l_fdec)
    return loss, {"e_loss": loss, "l_img": l_img, "l_fenc": l_fenc, "l_fdec": l_fdec}


def encoder_loss(
    encode_fn: Callable[[Array, Any], tuple[Array, Any]],
    generate_fn: Callable[[Array], Array],
    features_fn: Callable[[Array], Any],
    state: Any,
    x: Array,
    *,
    kappa: float = 1.0,
    detach_critic: bool = False,
) -> tuple[Array, tuple[Metrics, Any]]:
    """Stage-2 objective (docs/METHODS.md 1.6, f-AnoGAN izi_f): xr = G(E(x)), L_E as in
    `encoder_loss_terms`.

    encode_fn(x, state) -> (z, new state): the encoder being trained (its `spectral`
    vectors are the state); generate_fn(z) -> xr and features_fn(x) -> features are the
    frozen G and D (eval mode, no state). By default the critic terms are computed on xr
    itself, so their gradient flows through the frozen D and G into E (f-AnoGAN).
    detach_critic=True reproduces the reference defect: D sees stop_gradient(xr), so only
    the image term trains E. The features of x carry no gradient either way. With kappa 0
    the critic terms would weigh nothing: D is not run at all and the metrics are e_loss
    and l_img only (the same loss and gradient; on the quickstart's CPU this saved a quarter
    of the encoder update).
    Returns (loss, (metrics, state)).
    """
    z, state = encode_fn(x, state)
    xr = generate_fn(z)
    feats_x = feats_xr = None
    if kappa != 0:
        feats_x = jax.tree.map(jax.lax.stop_gradient, tuple(features_of(features_fn(x))))
        feats_xr = features_of(features_fn(jax.lax.stop_gradient(xr) if detach_critic else xr))
    loss, metrics = encoder_loss_terms(x, xr, feats_x, feats_xr, kappa=kappa)
    return loss, (metrics, state)


def latent_regression_loss(z_hat: Array, z: Array) -> Array:
    """f-AnoGAN's 'ziz' term: mean (z_hat - z)^2 over all elements, z (B, z_dim) the latents G
    drew its samples from and z_hat = E(G(z)) (computed in float32)."""
    if z_hat.shape != z.shape:
        raise ValueError(f"encoded latents {z_hat.shape} and drawn latents {z.shape} differ in shape")
    return jnp.mean(jnp.square(z_hat.astype(jnp.float32) - z.astype(jnp.float32)))
