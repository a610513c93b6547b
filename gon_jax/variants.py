"""The GON variants and the CAE baseline: one `Variant` per config.model.kind.

Everything that differs between the kinds is an entry here: the full-size defaults of each
preset, the settings rules, the Flax module, the loss it trains with, whether it has
BatchNorm (then scoring encodes each test image among saved training images, gon_jax/train.py)
or samples its latent, the data value range its output covers, and its PyTorch names and
mirror. build.py, origin.py, scoring.py, train.py, torch_names.py, torch_reference.py and
configs/gon_base.py read these fields instead of testing the kind, so a new variant is its
module plus one entry (and a config).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn

from anomaly_core import settings
from anomaly_core.interop.torch_import import NameMap
from gon_jax import torch_names
from gon_jax.cae import ConvAutoencoder
from gon_jax.layers import (ACTIVATIONS, OUT_ACTIVATIONS, ConvDecoder, decoder_output_size, mnist_stages,
                            mvtec_stages, vae32_stages)
from gon_jax.siren import ImplicitGON
from gon_jax.variational import VariationalGON

STAGE_LAYOUTS = {"mvtec": mvtec_stages, "mnist": mnist_stages, "vae32": vae32_stages}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One config.model.kind.

    defaults: preset -> its full-size settings (besides kind, preset and dtype).
    rules: config.model -> the kind's own settings rules (kind, image_size and channels are
      checked for every kind).
    module: (config.model, compute dtype) -> the Flax module.
    network: the module's class (the loss of a module given without its config).
    loss_kind: the gradient-origin loss (gon_jax/losses.py); None for a model that is not a
      GON (the CAE maps images to images and trains on the plain reconstruction error).
    batch_norm: the model has BatchNorm, so training saves a scoring context.
    samples_latent: the model draws its latent in training (needs the step's rng).
    value_range: config.model -> the data range (low, high) its output covers.
    torch_names: the PyTorch parameter names (gon_jax/torch_names.py).
    torch_module: the name of its PyTorch mirror's builder in gon_jax/torch_reference.py.
    """

    kind: str
    defaults: Mapping[str, Mapping[str, Any]]
    rules: Callable[[Any], list[settings.Rule]]
    module: Callable[[Any, Any], nn.Module]
    network: type
    loss_kind: str | None
    batch_norm: bool
    samples_latent: bool
    value_range: Callable[[Any], tuple[float, float]]
    torch_names: NameMap
    torch_module: str

    @property
    def is_gon(self) -> bool:
        """Whether its latent is the gradient origin's (a model z (B, nz) -> images)."""
        return self.loss_kind is not None


def _decoded_size(model_cfg: Any) -> int | None:
    """The side the conv/variational decoder of config.model.preset outputs (None if unknown)."""
    try:
        return decoder_output_size(STAGE_LAYOUTS[model_cfg.preset](model_cfg.ngf, model_cfg.channels))
    except (KeyError, AttributeError, TypeError, ValueError):
        return None


def _decoder_rules(model_cfg: Any) -> list[settings.Rule]:
    i, c = settings.integer, settings.choice
    preset_rule = c("config.model.preset", tuple(STAGE_LAYOUTS))
    settings.check(model_cfg, [preset_rule], at="config.model")  # named in the image_size rule
    size = _decoded_size(model_cfg)
    return [preset_rule, i("config.model.nz", 1), i("config.model.ngf", 1),
            c("config.model.activation", tuple(ACTIVATIONS)), c("config.model.out_activation", tuple(OUT_ACTIVATIONS)),
            settings.Rule("config.model.image_size", f"{size}, the side config.model.preset={model_cfg.preset!r} "
                          "decodes", lambda v: v == size)]


def _implicit_rules(model_cfg: Any) -> list[settings.Rule]:
    del model_cfg
    # sin(w0 * h) with w0 = 30: bfloat16's relative rounding 2^-8 of h ~ 1 becomes a phase
    # error of ~0.1 rad, so the SIREN's output would be noise at the pixel scale.
    return [settings.integer("config.model.nz", 1), settings.number("config.model.w0", 0, low_open=True),
            settings.Rule("config.model.dtype", "'float32' for the implicit GON (its sine layers multiply "
                          "activations by w0 = 30, which bfloat16 rounding turns into phase noise)",
                          lambda v: v == "float32", optional=True)]


def _cae_rules(model_cfg: Any) -> list[settings.Rule]:
    del model_cfg
    # config.model.widths: checked by the module it shapes (cae.py).
    return [settings.Rule("config.model.image_size", "divisible by 4 for the CAE", lambda v: v % 4 == 0)]


def _decoder(network: type) -> Callable[[Any, Any], nn.Module]:
    def module(m: Any, dtype: Any) -> nn.Module:
        return network(m.nz, STAGE_LAYOUTS[m.preset](m.ngf, m.channels), activation=m.activation,
                       out_activation=m.out_activation, dtype=dtype)

    return module


def _unit_range(model_cfg: Any) -> tuple[float, float]:
    del model_cfg
    return (0.0, 1.0)


def _conv_gon_range(model_cfg: Any) -> tuple[float, float]:
    # The GON notebooks' MVTec decoder ends in tanh on images in [-1, 1]; their MNIST one keeps [0, 1].
    return (-1.0, 1.0) if model_cfg.out_activation == "tanh" and model_cfg.preset == "mvtec" else (0.0, 1.0)


VARIANTS: dict[str, Variant] = {v.kind: v for v in (
    Variant(
        kind="conv_gon",
        defaults={
            # docs/METHODS.md 2.2
            "mvtec": dict(nz=100, ngf=124, image_size=64, channels=3, activation="elu", out_activation="tanh"),
            # docs/METHODS.md 2.3
            "mnist": dict(nz=100, ngf=64, image_size=28, channels=1, activation="elu", out_activation="tanh"),
        },
        rules=_decoder_rules, module=_decoder(ConvDecoder), network=ConvDecoder, loss_kind="mse_sum_channels",
        batch_norm=True, samples_latent=False, value_range=_conv_gon_range,
        torch_names=torch_names.CONV_GON, torch_module="conv_gon"),
    Variant(
        kind="implicit_gon",
        defaults={
            # docs/METHODS.md 2.4
            "mnist": dict(nz=32, image_size=28, channels=1, hidden=(256, 256, 256, 256), w0=30.0),
            "mvtec": dict(nz=32, image_size=64, channels=3, hidden=(256, 256, 256, 256), w0=30.0),
        },
        rules=_implicit_rules,
        module=lambda m, dtype: ImplicitGON(nz=m.nz, image_size=m.image_size, channels=m.channels,
                                            hidden=tuple(m.hidden), w0=float(m.w0)),
        network=ImplicitGON, loss_kind="siren_sum_pixels", batch_norm=False, samples_latent=False,
        value_range=_unit_range, torch_names=torch_names.IMPLICIT_GON, torch_module="implicit_gon"),
    Variant(
        kind="variational_gon",
        # docs/METHODS.md 2.5 (ReLU and sigmoid as in cwkx/GON Variational-GON.py)
        defaults={"vae32": dict(nz=48, ngf=32, image_size=32, channels=1, activation="relu",
                                out_activation="sigmoid")},
        rules=_decoder_rules, module=_decoder(VariationalGON), network=VariationalGON, loss_kind="vae_bce_kl",
        batch_norm=True, samples_latent=True, value_range=_unit_range,
        torch_names=torch_names.VARIATIONAL_GON, torch_module="variational_gon"),
    Variant(
        kind="cae",
        # docs/METHODS.md 2.7
        defaults={"mvtec": dict(image_size=64, channels=3, widths=(32, 64)),
                  "mnist": dict(image_size=28, channels=1, widths=(32, 64))},
        rules=_cae_rules,
        module=lambda m, dtype: ConvAutoencoder(channels=m.channels, widths=tuple(m.widths), dtype=dtype),
        network=ConvAutoencoder, loss_kind=None, batch_norm=False, samples_latent=False,
        value_range=_unit_range, torch_names=torch_names.CAE, torch_module="cae"),
)}


def kind_rule() -> settings.Rule:
    """config.model.kind is one of the registered kinds."""
    return settings.choice("config.model.kind", tuple(VARIANTS))


def variant(model_cfg: Any) -> Variant:
    """The Variant of config.model.kind (SettingError naming the setting when unknown)."""
    settings.check(model_cfg, [kind_rule()], at="config.model")
    return VARIANTS[model_cfg.kind]


def find(model: nn.Module) -> Variant | None:
    """The Variant whose module `model` is (by its exact class), or None for another module
    (a decoder written for a test or an experiment)."""
    return next((v for v in VARIANTS.values() if type(model) is v.network), None)


def of_module(model: nn.Module) -> Variant:
    """`find`, or ValueError naming the registered modules."""
    found = find(model)
    if found is not None:
        return found
    raise ValueError(f"{type(model).__name__} is none of the GON variants' modules "
                     f"({', '.join(v.network.__name__ for v in VARIANTS.values())})")
