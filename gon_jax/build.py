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
from anomaly_core.precision import DEFAULT_DTYPE, compute_dtype
from anomaly_core.summary import parameter_summary
from gon_jax.cae import ConvAutoencoder
from gon_jax.layers import (ACTIVATIONS, OUT_ACTIVATIONS, ConvDecoder, decoder_output_size, mnist_stages,
                            mvtec_stages, vae32_stages)
from gon_jax.siren import ImplicitGON
from gon_jax.variational import VariationalGON

KINDS = ("conv_gon", "implicit_gon", "variational_gon", "cae")
KIND_RULE = settings.choice("config.model.kind", KINDS)
STAGE_LAYOUTS = {"mvtec": mvtec_stages, "mnist": mnist_stages, "vae32": vae32_stages}

_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    # docs/METHODS.md 2.2
    ("conv_gon", "mvtec"): dict(nz=100, ngf=124, image_size=64, channels=3, activation="elu", out_activation="tanh"),
    # docs/METHODS.md 2.3
    ("conv_gon", "mnist"): dict(nz=100, ngf=64, image_size=28, channels=1, activation="elu", out_activation="tanh"),
    # docs/METHODS.md 2.5 (ReLU and sigmoid as in cwkx/GON Variational-GON.py)
    ("variational_gon", "vae32"): dict(nz=48, ngf=32, image_size=32, channels=1, activation="relu",
                                       out_activation="sigmoid"),
    # docs/METHODS.md 2.4
    ("implicit_gon", "mnist"): dict(nz=32, image_size=28, channels=1, hidden=(256, 256, 256, 256), w0=30.0),
    ("implicit_gon", "mvtec"): dict(nz=32, image_size=64, channels=3, hidden=(256, 256, 256, 256), w0=30.0),
    # docs/METHODS.md 2.7
    ("cae", "mvtec"): dict(image_size=64, channels=3, widths=(32, 64)),
    ("cae", "mnist"): dict(image_size=28, channels=1, widths=(32, 64)),
}


def default_gon_model_config(kind: str = "conv_gon", preset: str = "mvtec") -> ml_collections.ConfigDict:
    """Full-size settings of one (kind, preset): conv_gon mvtec|mnist, variational_gon vae32,
    implicit_gon mnist|mvtec, cae mvtec|mnist.

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
    if (kind, preset) not in _DEFAULTS:
        known = ", ".join(f"{k}/{p}" for k, p in _DEFAULTS)
        raise ValueError(f"config.model.kind/preset {kind!r}/{preset!r} has no defaults; known: {known}")
    return ml_collections.ConfigDict(dict(
        kind=kind, preset=preset, **_DEFAULTS[(kind, preset)],
        # Computation dtype: 'float32' | 'bfloat16' (not for the implicit GON); params, losses and
        # BatchNorm statistics stay float32.
        dtype=DEFAULT_DTYPE,
    ))


def _decoded_size(model_cfg: Any) -> int | None:
    """The side the conv/variational decoder of config.model.preset outputs (None if unknown)."""
    try:
        return decoder_output_size(STAGE_LAYOUTS[model_cfg.preset](model_cfg.ngf, model_cfg.channels))
    except (KeyError, AttributeError, TypeError, ValueError):
        return None


def model_rules(model_cfg: Any) -> list[settings.Rule]:
    """The constraints of config.model for its kind (the kind is checked first)."""
    i, c = settings.integer, settings.choice
    rules = [KIND_RULE, i("config.model.image_size", 1), i("config.model.channels", 1)]
    settings.check(model_cfg, [KIND_RULE], at="config.model")  # the kind decides the other rules
    kind = model_cfg.kind
    if kind in ("conv_gon", "variational_gon"):
        preset_rule = c("config.model.preset", tuple(STAGE_LAYOUTS))
        settings.check(model_cfg, [preset_rule], at="config.model")  # named in the image_size rule
        size = _decoded_size(model_cfg)
        rules += [preset_rule, i("config.model.nz", 1), i("config.model.ngf", 1),
                  c("config.model.activation", tuple(ACTIVATIONS)),
                  c("config.model.out_activation", tuple(OUT_ACTIVATIONS)),
                  settings.Rule("config.model.image_size", f"{size}, the side config.model.preset="
                                f"{model_cfg.preset!r} decodes", lambda v: v == size)]
    elif kind == "implicit_gon":
        # sin(w0 * h) with w0 = 30: bfloat16's relative rounding 2^-8 of h ~ 1 becomes a phase
        # error of ~0.1 rad, so the SIREN's output would be noise at the pixel scale.
        rules += [i("config.model.nz", 1), settings.number("config.model.w0", 0, low_open=True),
                  settings.Rule("config.model.dtype", "'float32' for the implicit GON (its sine layers multiply "
                                "activations by w0 = 30, which bfloat16 rounding turns into phase noise)",
                                lambda v: v == "float32", optional=True)]
    elif kind == "cae":
        # config.model.hidden and widths: checked by the modules they shape (siren.py, cae.py).
        rules += [settings.Rule("config.model.image_size", "divisible by 4 for the CAE", lambda v: v % 4 == 0)]
    return rules


def build_gon_model(model_cfg: Any) -> nn.Module:
    """ConvDecoder | ImplicitGON | VariationalGON | ConvAutoencoder for config.model.

    GON models map z (B, nz) to images (B, image_size, image_size, channels); the CAE maps
    images to images. Raises settings.SettingError naming the config field at fault.
    """
    settings.check(model_cfg, model_rules(model_cfg), at="config.model")
    m, dtype = model_cfg, compute_dtype(model_cfg)
    if m.kind in ("conv_gon", "variational_gon"):
        stages = STAGE_LAYOUTS[m.preset](m.ngf, m.channels)
        network = ConvDecoder if m.kind == "conv_gon" else VariationalGON
        return network(m.nz, stages, activation=m.activation, out_activation=m.out_activation, dtype=dtype)
    if m.kind == "implicit_gon":
        return ImplicitGON(nz=m.nz, image_size=m.image_size, channels=m.channels, hidden=tuple(m.hidden),
                           w0=float(m.w0))
    return ConvAutoencoder(channels=m.channels, widths=tuple(m.widths), dtype=dtype)


def model_input(model_cfg: Any, batch_size: int = 2) -> jax.Array:
    """Zeros shaped like the model's input: z (B, nz) for a GON, images (B, S, S, C) for the CAE."""
    settings.check(model_cfg, model_rules(model_cfg), at="config.model")
    if model_cfg.kind == "cae":
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
