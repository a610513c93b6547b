"""f-UNetGAN generator (docs/METHODS.md 1.2): SN Dense -> 4x4 -> GResBlock+CBAM up stages -> head."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.precision import cast
from anomaly_core.networks.torch_layers import BatchNorm, check_choice, torch_bias_init, torch_kernel_init
from funetgan_jax.cbam import CBAM
from funetgan_jax.layers import SNConv, SNDense, instance_norm, upsample_nearest

Array = jax.Array

GENERATOR_OUTPUTS = ("relu_tanh", "tanh", "linear")
# Channel multipliers of width for 4x4 -> 128x128 (five stages).
_MULTIPLIERS = (16, 16, 8, 4, 2, 1)


def generator_multipliers(image_size: int) -> tuple[int, ...]:
    """Width multipliers of the 4x4 input and of each up stage's output, for image_size = 4*2^n.

    n = 5 (128) gives (16, 16, 8, 4, 2, 1); smaller sizes take the last n+1 so the output
    width is always `width`; larger sizes prepend 16s (an extension; the paper uses 128).
    """
    n = (image_size // 4).bit_length() - 1 if isinstance(image_size, int) and image_size > 0 else 0
    if n < 1 or image_size != 4 * 2**n:
        raise ValueError(f"config.model.image_size must be 4*2^n with n >= 1 (8, 16, ..., 128), got {image_size!r}")
    if n <= 5:
        return _MULTIPLIERS[-(n + 1):]
    return (16,) * (n - 5) + _MULTIPLIERS


class GResBlock(nn.Module):
    """Up-sampling residual block: (B, H, W, Cin) -> (B, 2H, 2W, features).

    h = SNConv3x3(ReLU(IN(SNConv3x3(up(ReLU(IN(x))))))), shortcut SNConv1x1(up(x)) always.
    """

    features: int
    sn_mode: str = "torch"  # layers.SPECTRAL_NORMS
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        x = cast(x, self.dtype)
        conv = functools.partial(SNConv, sn_mode=self.sn_mode, dtype=self.dtype)
        h = upsample_nearest(nn.relu(instance_norm(x)))
        h = conv(self.features, 3, padding=1, name="conv1")(h, train=train)
        h = nn.relu(instance_norm(h))
        h = conv(self.features, 3, padding=1, name="conv2")(h, train=train)
        shortcut = conv(self.features, 1, name="conv_sc")(upsample_nearest(x), train=train)
        return h + shortcut


class Generator(nn.Module):
    """z (B, z_dim) -> image (B, S, S, channels), in `dtype` (the computation dtype; params float32).

    Outputs lie in [0, 1) for output='relu_tanh' (reference) and in (-1, 1) for 'tanh';
    'linear' returns tanh's argument (unbounded: a pixel pushed past the data range still
    gets the critic's gradient, where tanh's saturates).
    """

    z_dim: int = 100
    width: int = 64
    image_size: int = 128
    channels: int = 3
    output: str = "relu_tanh"
    cbam_reduction: int = 16
    spatial_norm: str = "batch"
    sn_mode: str = "biggan"  # layers.SPECTRAL_NORMS (config.model.spectral_norm)
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    def __post_init__(self) -> None:
        generator_multipliers(self.image_size)
        check_choice(self.output, GENERATOR_OUTPUTS, "config.model.generator_output")
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Array, *, train: bool) -> Array:
        if z.ndim != 2 or z.shape[-1] != self.z_dim:
            raise ValueError(f"Generator expects z of shape (B, {self.z_dim}) (config.model.z_dim), got {z.shape}")
        mults = generator_multipliers(self.image_size)
        c0 = mults[0] * self.width
        h = SNDense(c0 * 4 * 4, sn_mode=self.sn_mode, dtype=self.dtype, name="proj_z")(z, train=train)
        # PyTorch's view(-1, C, 4, 4) is channel-major; keep that order so imported weights line up.
        h = h.reshape(z.shape[0], c0, 4, 4).transpose(0, 2, 3, 1)
        for i, m in enumerate(mults[1:]):
            h = GResBlock(m * self.width, self.sn_mode, self.dtype, name=f"block{i + 1}")(h, train=train)
            h = CBAM(self.cbam_reduction, self.spatial_norm, self.dtype, name=f"cbam{i + 1}")(h, train=train)
        h = BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype, name="out_bn")(h, train=train)
        h = nn.Conv(self.channels, (3, 3), padding=1, kernel_init=torch_kernel_init,
                    bias_init=torch_bias_init(9 * self.width), dtype=self.dtype, name="out_conv")(h)
        if self.output == "linear":
            return h
        if self.output == "relu_tanh":
            h = nn.relu(h)
        return jnp.tanh(h)
