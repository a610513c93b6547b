"""CBAM attention (docs/METHODS.md 1.1): channel gate, then spatial gate on the gated tensor."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.precision import cast
from anomaly_core.networks.torch_layers import BatchNorm, check_choice, torch_bias_init, torch_kernel_init

Array = jax.Array

SPATIAL_NORMS = ("batch", "none")


class ChannelGate(nn.Module):
    """sigmoid(MLP(avgpool_hw x) + MLP(maxpool_hw x)) with one shared MLP C -> max(1, C//r) -> C.

    (B, H, W, C) -> gate (B, 1, 1, C) in (0, 1).
    """

    reduction: int = 16
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        hidden = max(1, c // self.reduction)  # max(1, .) so tiny test widths work
        fc1 = nn.Dense(hidden, kernel_init=torch_kernel_init, bias_init=torch_bias_init(c), dtype=self.dtype,
                       name="mlp_hidden")
        fc2 = nn.Dense(c, kernel_init=torch_kernel_init, bias_init=torch_bias_init(hidden), dtype=self.dtype,
                       name="mlp_out")
        att = fc2(nn.relu(fc1(jnp.mean(x, axis=(1, 2))))) + fc2(nn.relu(fc1(jnp.max(x, axis=(1, 2)))))
        return nn.sigmoid(att)[:, None, None, :]


class SpatialGate(nn.Module):
    """sigmoid(Norm(Conv7x7([max_c x, mean_c x]))), conv without bias.

    norm 'batch': BatchNorm eps 1e-5, torch momentum 0.01 (flax 0.99), affine; 'none': no norm.
    (B, H, W, C) -> gate (B, H, W, 1) in (0, 1).
    """

    norm: str = "batch"
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    def __post_init__(self) -> None:
        check_choice(self.norm, SPATIAL_NORMS, "config.model.spatial_norm")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        s = jnp.concatenate([jnp.max(x, axis=-1, keepdims=True), jnp.mean(x, axis=-1, keepdims=True)], axis=-1)
        s = nn.Conv(1, (7, 7), padding=3, use_bias=False, kernel_init=torch_kernel_init, dtype=self.dtype,
                    name="conv")(s)
        if self.norm == "batch":
            # Couples the samples of a batch (weakens a per-sample gradient penalty);
            # kept as the reference-faithful default, 'none' is the alternative.
            s = BatchNorm(momentum=0.99, epsilon=1e-5, dtype=self.dtype, name="bn")(s, train=train)
        return nn.sigmoid(s)


class CBAM(nn.Module):
    """Convolutional block attention: x * channel gate, then * spatial gate. (B,H,W,C) -> same, in `dtype`."""

    reduction: int = 16
    spatial_norm: str = "batch"
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    def __post_init__(self) -> None:
        check_choice(self.spatial_norm, SPATIAL_NORMS, "config.model.spatial_norm")
        if not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError(f"config.model.cbam_reduction must be a positive int, got {self.reduction!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        x = cast(x, self.dtype)
        x = x * ChannelGate(self.reduction, self.dtype, name="channel_gate")(x)
        return x * SpatialGate(self.spatial_norm, self.dtype, name="spatial_gate")(x, train=train)
