"""Convolutional autoencoder baseline (docs/METHODS.md 2.7), the comparison model of the GON seed.

  Conv3x3(C->32, pad 1) ReLU MaxPool2 -> Conv3x3(32->64, pad 1) ReLU MaxPool2 ->
  ConvT(64->32, k3 s2 p1 op1) ReLU -> ConvT(32->C, k3 s2 p1 op1) sigmoid
Its loss is gon_jax.losses.cae_mse_loss. PyTorch import: conv{i}/convt{i} as documented in
gon_jax.layers.
"""

from typing import Any

import flax.linen as nn
import jax

from anomaly_core.networks.torch_layers import torch_bias_init, torch_kernel_init
from gon_jax.layers import torch_conv_transpose

Array = jax.Array


class ConvAutoencoder(nn.Module):
    """x (B, H, W, C) -> reconstruction (B, H, W, C) in (0, 1), in `dtype`; H and W divisible by 4.

    widths: channels of the two encoder convolutions (reference (32, 64)). No BatchNorm;
    `train` is accepted for the common interface.
    """

    channels: int = 3
    widths: tuple[int, int] = (32, 64)
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    def __post_init__(self) -> None:
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"config.model.channels must be a positive int, got {self.channels!r}")
        if (not isinstance(self.widths, (tuple, list)) or len(self.widths) != 2
                or not all(isinstance(w, int) and w >= 1 for w in self.widths)):
            raise ValueError(f"config.model.widths must be two positive ints, got {self.widths!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        del train
        if x.ndim != 4 or x.shape[-1] != self.channels or x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"ConvAutoencoder expects (B, H, W, {self.channels}) with H, W divisible by 4, "
                             f"got {x.shape}")
        h = x
        for i, width in enumerate(self.widths):
            fan_in = h.shape[-1] * 9
            h = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), kernel_init=torch_kernel_init,
                        bias_init=torch_bias_init(fan_in), dtype=self.dtype, name=f"conv{i}")(h)
            h = nn.max_pool(nn.relu(h), (2, 2), strides=(2, 2))
        h = nn.relu(torch_conv_transpose(self.widths[0], 3, 2, 1, 1, dtype=self.dtype, name="convt0")(h))
        return nn.sigmoid(torch_conv_transpose(self.channels, 3, 2, 1, 1, dtype=self.dtype, name="convt1")(h))
