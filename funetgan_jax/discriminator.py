"""U-Net discriminator (docs/METHODS.md 1.3) and the ResidualConv block it shares with the encoder.

The paper's four variants are one module: block in {'residual', 'conv'} (the 'conv' block is
ResidualConv without its shortcut) x attention in {'none', 'cbam'} (contracting path only).
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.precision import cast
from anomaly_core.networks.torch_layers import check_choice, torch_bias_init, torch_kernel_init
from funetgan_jax.cbam import CBAM
from funetgan_jax.layers import SNConv, SNDense, instance_norm, pool_2x2, upsample_nearest

Array = jax.Array

D_BLOCKS = ("residual", "conv")
ATTENTIONS = ("none", "cbam")
GLOBAL_POOLS = ("sum", "mean")
D_NORMS = ("instance", "none")


class ResidualConv(nn.Module):
    """(B, H, W, Cin) -> (B, H', W', features), H' = H/2 if down else H.

      x = IN(x); h = ReLU(x) if preact else x
      h = SNConv3x3(LeakyReLU(IN(SNConv3x3(h)))); pool if down; CBAM if attention
      return h + shortcut(x)   (shortcut=False: return h)
    The shortcut is the identity when Cin == features and not down, else SNConv1x1 and
    the pool, conv first if preact, pool first otherwise. Both norm sites are IN in the
    discriminator and in the encoder (1.3, 1.4); the encoder block differs only by
    pool='avg'.
    """

    features: int
    preact: bool
    down: bool
    attention: str = "none"
    pool: str = "max"
    shortcut: bool = True
    cbam_reduction: int = 16
    spatial_norm: str = "batch"
    norm: str = "instance"  # both norm sites: 'instance' (reference) | 'none' (spectral norm only)
    sn_mode: str = "torch"  # layers.SPECTRAL_NORMS
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    def __post_init__(self) -> None:
        check_choice(self.attention, ATTENTIONS, "ResidualConv.attention (config.model.d_attention/e_attention)")
        check_choice(self.norm, D_NORMS, "ResidualConv.norm (config.model.d_norm)")
        check_choice(self.pool, ("max", "avg"), "ResidualConv.pool")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        norm = instance_norm if self.norm == "instance" else (lambda t: t)
        x = norm(cast(x, self.dtype))  # the shortcut uses this normalised x, as in the reference
        h = nn.relu(x) if self.preact else x
        conv = functools.partial(SNConv, sn_mode=self.sn_mode, dtype=self.dtype)
        h = conv(self.features, 3, padding=1, name="conv1")(h, train=train)
        h = nn.leaky_relu(norm(h), 0.2)
        h = conv(self.features, 3, padding=1, name="conv2")(h, train=train)
        if self.down:
            h = pool_2x2(h, self.pool)
        if self.attention == "cbam":
            h = CBAM(self.cbam_reduction, self.spatial_norm, self.dtype, name="cbam")(h, train=train)
        if not self.shortcut:
            return h
        if x.shape[-1] == self.features and not self.down:
            return h + x
        conv_sc = conv(self.features, 1, name="conv_sc")
        if self.preact:
            s = conv_sc(x, train=train)
            s = pool_2x2(s, self.pool) if self.down else s
        else:
            s = pool_2x2(x, self.pool) if self.down else x
            s = conv_sc(s, train=train)
        return h + s


class DiscriminatorOutput(NamedTuple):
    """global_logit (B,), pixel_logits (B, H, W, 1); features only with return_features=True:
    global_features f_enc (B, 16*width), pixel_features f_dec (B, H, W, width). All in the
    discriminator's `dtype` (the losses compute in float32)."""

    global_logit: Array
    pixel_logits: Array
    global_features: Array | None = None
    pixel_features: Array | None = None


class UNetDiscriminator(nn.Module):
    """U-Net critic: image (B, H, W, C), H and W divisible by 16 -> DiscriminatorOutput (raw logits)."""

    width: int = 64
    block: str = "residual"
    attention: str = "cbam"
    cbam_reduction: int = 16
    spatial_norm: str = "batch"
    # The global head's pooling of LeakyReLU(e5) over positions: 'sum' (reference) | 'mean'.
    global_pool: str = "sum"
    # Normalisation inside the blocks: 'instance' (reference) or 'none' (spectral norm only,
    # as SNGAN/BigGAN critics). Instance norm divides every channel of every image by its own
    # spread: the critic cannot see an image's brightness, contrast or colour balance, and a
    # low-contrast input multiplies its input gradient by up to 1 / sqrt(1e-5).
    norm: str = "instance"
    sn_mode: str = "biggan"  # layers.SPECTRAL_NORMS (config.model.spectral_norm)
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    def __post_init__(self) -> None:
        check_choice(self.block, D_BLOCKS, "config.model.d_block")
        check_choice(self.global_pool, GLOBAL_POOLS, "config.model.d_global_pool")
        check_choice(self.norm, D_NORMS, "config.model.d_norm")
        check_choice(self.attention, ATTENTIONS, "config.model.d_attention")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool, return_features: bool = False) -> DiscriminatorOutput:
        if x.ndim != 4 or x.shape[1] % 16 or x.shape[2] % 16:
            raise ValueError(f"UNetDiscriminator needs images (B, H, W, C) with H and W divisible by 16 "
                             f"(config.model.image_size), got shape {x.shape}")
        filters = [self.width * m for m in (1, 2, 4, 8, 16)]

        def block(features: int, down: bool, attention: str, name: str) -> ResidualConv:
            return ResidualConv(features, preact=down, down=down, attention=attention,
                                shortcut=self.block == "residual", cbam_reduction=self.cbam_reduction,
                                spatial_norm=self.spatial_norm, norm=self.norm, sn_mode=self.sn_mode,
                                dtype=self.dtype, name=name)

        skips = []
        h = x
        for i, f in enumerate(filters):
            h = block(f, down=i > 0, attention=self.attention, name=f"enc{i + 1}")(h, train=train)
            skips.append(h)
        e5 = h
        for i in reversed(range(4)):
            h = jnp.concatenate([upsample_nearest(h), skips[i]], axis=-1)
            h = block(filters[i], down=False, attention="none", name=f"dec{i + 1}")(h, train=train)

        pool = jnp.sum if self.global_pool == "sum" else jnp.mean
        f_enc = pool(nn.leaky_relu(e5, 0.2), axis=(1, 2))
        global_logit = SNDense(1, sn_mode=self.sn_mode, dtype=self.dtype, name="linear")(f_enc, train=train)[:, 0]
        pixel_logits = nn.Conv(1, (1, 1), kernel_init=torch_kernel_init, bias_init=torch_bias_init(self.width),
                               dtype=self.dtype, name="output_conv")(h)
        if return_features:
            return DiscriminatorOutput(global_logit, pixel_logits, f_enc, h)
        return DiscriminatorOutput(global_logit, pixel_logits)
