"""f-UNetGAN encoder (docs/METHODS.md 1.4): image -> latent in (-1, 1)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.torch_layers import check_choice
from funetgan_jax.discriminator import ATTENTIONS, ResidualConv
from funetgan_jax.layers import SNConv, SNDense

Array = jax.Array


class Encoder(nn.Module):
    """image (B, H, W, C), H and W divisible by 32 -> z (B, z_dim) in (-1, 1), in `dtype`.

    SNConv3x3(C -> w), five EBlocks (w -> 2w -> 4w -> 8w -> 16w -> 16w, each preact, down),
    channel-major flatten, SN Dense, tanh. EBlock = ResidualConv with pool='avg'.
    sn_mode 'biggan' is the original's mix: BigGAN-style layers in the blocks, torch's
    spectral_norm in the first conv and the last dense layer; 'torch' uses it everywhere.
    """

    z_dim: int = 100
    width: int = 64
    attention: str = "none"
    cbam_reduction: int = 16
    spatial_norm: str = "batch"
    sn_mode: str = "biggan"  # layers.SPECTRAL_NORMS (config.model.spectral_norm)
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    def __post_init__(self) -> None:
        # The reference E_ResidualConv has no attention argument (a defect); 1.4 makes it a switch.
        check_choice(self.attention, ATTENTIONS, "config.model.e_attention")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        if x.ndim != 4 or x.shape[1] % 32 or x.shape[2] % 32:
            raise ValueError(f"Encoder needs images (B, H, W, C) with H and W divisible by 32 "
                             f"(config.model.image_size), got shape {x.shape}")
        h = SNConv(self.width, 3, padding=1, dtype=self.dtype, name="input_conv")(x, train=train)
        for i, m in enumerate((2, 4, 8, 16, 16)):
            h = ResidualConv(m * self.width, preact=True, down=True, attention=self.attention, pool="avg",
                             cbam_reduction=self.cbam_reduction, spatial_norm=self.spatial_norm,
                             sn_mode=self.sn_mode, dtype=self.dtype, name=f"block{i + 1}")(h, train=train)
        # PyTorch's view(B, -1) flattens NCHW: channel-major, so imported weights line up.
        h = h.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        return jnp.tanh(SNDense(self.z_dim, dtype=self.dtype, name="linear")(h, train=train))
