"""Builds the GON models and the CAE baseline from `config.model` and describes their parameters.

config.model fields: kind ('conv_gon' | 'implicit_gon' | 'variational_gon' | 'cae'), preset
(the layout: conv/variational GON 'mvtec' 64x64, 'mnist' 28x28, 'vae32' 32x32; implicit
GON and CAE 'mnist' | 'mvtec' for their image size), image_size, channels and, per kind:
  conv_gon, variational_gon: nz, ngf, activation, out_activation
  implicit_gon: nz, hidden, w0
  cae: widths
and optionally dtype ('float32' default | 'bfloat16'): the computation dtype; parameters,
losses and BatchNorm statistics stay float32.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from anomaly_core import settings
from anomaly_core.networks.precision import DEFAULT_DTYPE, compute_dtype
from anomaly_core.networks.summary import parameter_summary
from gon_jax.variants import VARIANTS, kind_rule, variant


def default_gon_model_config(kind: str = "conv_gon", preset: str = "mvtec") -> ml_collections.ConfigDict:
    """Full-size settings of one (kind, preset) (gon_jax/variants.py): conv_gon mvtec|mnist,
    variational_gon vae32, implicit_gon mnist|mvtec, cae mvtec|mnist.

    Fields:
      kind: 'conv_gon' | 'variational_gon' | 'implicit_gon' (SIREN) | 'cae' (autoencoder baseline).
      preset: the original architecture the defaults follow ('mvtec', 'mnist', 'vae32').
      image_size: square input side in pixels (equals config.data.image_size).
      channels: image channels (equals config.data.channels).
      nz: latent size (the gradient-origin latent).
      ngf: base width of the transposed-convolution decoder.
      activation: hidden activation of the decoder ('elu' in the GON notebooks).
      out_activation: output activation ('tanh' for data in [-1, 1], 'sigmoid' for [0, 1]).
      hidden: widths of the SIREN's hidden layers (implicit GON).
      w0: the SIREN's frequency factor (sin(w0 (W x + b))).
      widths: the CAE's encoder widths.
      dtype: the computation dtype ('float32' | 'bfloat16').
    """
    if preset not in (VARIANTS[kind].defaults if kind in VARIANTS else {}):
        known = ", ".join(f"{k}/{p}" for k, v in VARIANTS.items() for p in v.defaults)
        raise ValueError(f"config.model.kind/preset {kind!r}/{preset!r} has no defaults; known: {known}")
    return ml_collections.ConfigDict(dict(
        kind=kind, preset=preset, **VARIANTS[kind].defaults[preset],
        # Computation dtype: 'float32' | 'bfloat16' (not for the implicit GON); params, losses and
        # BatchNorm statistics stay float32.
        dtype=DEFAULT_DTYPE,
    ))


def model_rules(model_cfg: Any) -> list[settings.Rule]:
    """The constraints of config.model for its kind (the kind is checked first)."""
    settings.check(model_cfg, [kind_rule()], at="config.model")
    i = settings.integer
    return [kind_rule(), i("config.model.image_size", 1), i("config.model.channels", 1),
            *variant(model_cfg).rules(model_cfg)]


def build_gon_model(model_cfg: Any) -> nn.Module:
    """ConvDecoder | ImplicitGON | VariationalGON | ConvAutoencoder for config.model.

    GON models map z (B, nz) to images (B, image_size, image_size, channels); the CAE maps
    images to images. Raises settings.SettingError naming the config field at fault.
    """
    settings.check(model_cfg, model_rules(model_cfg), at="config.model")
    return variant(model_cfg).module(model_cfg, compute_dtype(model_cfg))


def model_input(model_cfg: Any, batch_size: int = 2) -> jax.Array:
    """Zeros shaped like the model's input: z (B, nz) for a GON, images (B, S, S, C) for the CAE."""
    settings.check(model_cfg, model_rules(model_cfg), at="config.model")
    if not variant(model_cfg).is_gon:
        s = model_cfg.image_size
        return jnp.zeros((batch_size, s, s, model_cfg.channels), jnp.float32)
    return jnp.zeros((batch_size, model_cfg.nz), jnp.float32)


def init_variables(model_cfg: Any, rng: jax.Array) -> dict[str, Any]:
    """{'params', 'batch_stats' (conv/variational GON)} of build_gon_model(model_cfg)."""
    return build_gon_model(model_cfg).init(rng, model_input(model_cfg))


def describe(model_cfg: Any) -> str:
    """Parameter table of the model (shapes only, via jax.eval_shape: no memory needed)."""
    model, z = build_gon_model(model_cfg), model_input(model_cfg)
    shapes = jax.eval_shape(model.init, jax.random.key(0), z)
    return f"{model_cfg.kind} ({model_cfg.preset})\n" + parameter_summary(shapes)
