"""Builds the f-UNetGAN networks from `config.model` and describes their parameters."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from anomaly_core import settings
from anomaly_core.networks.precision import DEFAULT_DTYPE, compute_dtype
from anomaly_core.networks.summary import parameter_summary
from funetgan_jax.cbam import SPATIAL_NORMS
from funetgan_jax.discriminator import ATTENTIONS, D_BLOCKS, D_NORMS, GLOBAL_POOLS, UNetDiscriminator
from funetgan_jax.encoder import Encoder
from funetgan_jax.generator import GENERATOR_OUTPUTS, Generator, generator_multipliers
from funetgan_jax.layers import SPECTRAL_NORMS

def _model_rules() -> dict[str, settings.Rule]:
    """Each config.model setting's constraint."""
    rules = {f: settings.integer(f"config.model.{f}", 1)
             for f in ("image_size", "channels", "z_dim", "width", "cbam_reduction")}
    rules.update({f: settings.choice(f"config.model.{f}", choices) for f, choices in (
        ("spatial_norm", SPATIAL_NORMS), ("generator_output", GENERATOR_OUTPUTS), ("d_block", D_BLOCKS),
        ("d_attention", ATTENTIONS), ("e_attention", ATTENTIONS), ("d_global_pool", GLOBAL_POOLS),
        ("d_norm", D_NORMS), ("spectral_norm", SPECTRAL_NORMS))})
    return rules


MODEL_RULES = _model_rules()
# The settings each network is built from.
NETWORK_SETTINGS = {
    "generator": ("image_size", "channels", "z_dim", "width", "cbam_reduction", "spatial_norm", "generator_output",
                  "spectral_norm"),
    "discriminator": ("image_size", "width", "cbam_reduction", "spatial_norm", "d_block", "d_attention",
                      "d_global_pool", "d_norm", "spectral_norm"),
    "encoder": ("image_size", "z_dim", "width", "cbam_reduction", "spatial_norm", "e_attention", "spectral_norm"),
}
# The side the discriminator (4 halvings) and the encoder (5) need image_size to be divisible by.
DIVISORS = {"discriminator": 16, "encoder": 32}


def network_rules(network: str) -> list[settings.Rule]:
    """The constraints of the config.model settings `network` is built from."""
    rules = [MODEL_RULES[f] for f in NETWORK_SETTINGS[network]]
    if network in DIVISORS:
        d = DIVISORS[network]
        rules.append(settings.Rule("config.model.image_size", f"divisible by {d} for the {network}",
                                   lambda v, d=d: v % d == 0))
    return rules


def model_rules() -> list[settings.Rule]:
    """The constraints of every config.model setting of an f-UNetGAN."""
    return [rule for network in NETWORK_SETTINGS for rule in network_rules(network)]


# Settings without weights that the original f-UNetGAN's networks compute with, per network
# (its files load under any value of them; its outputs need these).
ORIGINAL_COMPUTE = {"generator": {"generator_output": "relu_tanh"},
                    "discriminator": {"d_norm": "instance", "d_global_pool": "sum"}}


def default_model_config() -> ml_collections.ConfigDict:
    """Full-size f-UNetGAN model settings (docs/METHODS.md 1): 128x128x3, z 100, width 64."""
    return ml_collections.ConfigDict(dict(
        image_size=128,  # square input side in pixels (equals config.data.image_size)
        channels=3,  # image channels (equals config.data.channels)
        z_dim=100,  # latent size of G's input and E's output
        width=64,  # base width ch: D and E filters ch x (1, 2, 4, 8, 16), G from 16 ch down to ch
        cbam_reduction=16,  # CBAM channel-gate MLP reduction r (hidden width max(1, C // r))
        spatial_norm="batch",  # CBAM spatial-gate norm: "batch" (reference) | "none"
        generator_output="relu_tanh",  # "relu_tanh" (data in [0,1]) | "tanh" (data in [-1,1]) | "linear" (unbounded)
        d_block="residual",  # "residual" | "conv"
        d_attention="cbam",  # "cbam" (the original's UNet(attention=True)) | "none"
        e_attention="none",  # "none" | "cbam"
        d_global_pool="sum",  # global head pooling of LeakyReLU(e5): "sum" (reference) | "mean"
        d_norm="instance",  # norm inside D's blocks: "instance" (reference) | "none" (spectral norm only)
        # "biggan": the original's spectral norm (u and sigma stored, one power iteration in
        # every forward, eval included; torch's spectral_norm in the encoder's first and last
        # layer, as the original) | "torch": torch.nn.utils.spectral_norm everywhere (u and v
        # stored, no iteration in eval).
        spectral_norm="biggan",
        # Computation dtype: 'float32' | 'bfloat16' (params, losses, penalty norms and normalisation
        # statistics stay float32; docs/BENCHMARKS.md has the measured speed and agreement).
        dtype=DEFAULT_DTYPE,
    ))


def build_generator(model_cfg: Any) -> Generator:
    """Generator z (B, z_dim) -> (B, S, S, channels)."""
    cfg = model_cfg
    settings.check(cfg, network_rules("generator"), at="config.model")
    generator_multipliers(cfg.image_size)
    return Generator(z_dim=cfg.z_dim, width=cfg.width, image_size=cfg.image_size, channels=cfg.channels,
                     output=cfg.generator_output, cbam_reduction=cfg.cbam_reduction,
                     spatial_norm=cfg.spatial_norm, sn_mode=cfg.spectral_norm, dtype=compute_dtype(cfg))


def build_discriminator(model_cfg: Any) -> UNetDiscriminator:
    """U-Net discriminator for (B, S, S, channels) images, S divisible by 16."""
    cfg = model_cfg
    settings.check(cfg, network_rules("discriminator"), at="config.model")
    return UNetDiscriminator(width=cfg.width, block=cfg.d_block, attention=cfg.d_attention,
                             cbam_reduction=cfg.cbam_reduction, spatial_norm=cfg.spatial_norm,
                             global_pool=cfg.d_global_pool, norm=cfg.d_norm, sn_mode=cfg.spectral_norm,
                             dtype=compute_dtype(cfg))


def build_encoder(model_cfg: Any) -> Encoder:
    """Encoder (B, S, S, channels) -> (B, z_dim), S divisible by 32."""
    cfg = model_cfg
    settings.check(cfg, network_rules("encoder"), at="config.model")
    return Encoder(z_dim=cfg.z_dim, width=cfg.width, attention=cfg.e_attention,
                   cbam_reduction=cfg.cbam_reduction, spatial_norm=cfg.spatial_norm, sn_mode=cfg.spectral_norm,
                   dtype=compute_dtype(cfg))


def input_shape(module: nn.Module, model_cfg: Any, batch_size: int = 1) -> tuple[int, ...]:
    """The input shape `module` (built from model_cfg) takes: (B, z_dim) or (B, S, S, channels)."""
    if isinstance(module, Generator):
        return (batch_size, model_cfg.z_dim)
    return (batch_size, model_cfg.image_size, model_cfg.image_size, model_cfg.channels)


def init_variables(module: nn.Module, rng: jax.Array, shape: Sequence[int]) -> dict[str, Any]:
    """Variables ('params', 'spectral', and 'batch_stats' where BatchNorm is used) from zeros of `shape`."""
    return module.init({"params": rng}, jnp.zeros(tuple(shape), jnp.float32), train=False)


def describe(model_cfg: Any) -> str:
    """Parameter overview of G, D and E, from shapes only (jax.eval_shape, no compute)."""
    parts = []
    for name, build in (("Generator", build_generator), ("Discriminator", build_discriminator),
                        ("Encoder", build_encoder)):
        module = build(model_cfg)
        shape = input_shape(module, model_cfg)
        variables = jax.eval_shape(lambda rng: init_variables(module, rng, shape), jax.random.key(0))
        parts.append(f"== {name} ==\n{parameter_summary(variables)}")
    return "\n\n".join(parts)
