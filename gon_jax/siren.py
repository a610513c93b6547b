"""Implicit GON (docs/METHODS.md 2.4): a SIREN over pixel coordinates conditioned on the latent.

Every pixel (h, w) gets the coordinate c = (linspace(-1,1,H)[h], linspace(-1,1,W)[w]) (ij
meshgrid flattened row-major, so coordinate index h*W + w is pixel (h, w), as in the
original GON code, whose square `get_mgrid` this equals); the network maps [c, z] (2 + nz)
through `len(hidden)` sine layers y = sin(w0 (W x + b)) and a final linear layer to C values.

Initialisation (original GON code): first layer kernel U(-1/in, 1/in), every later layer
(the final linear one included) U(-sqrt(6/in)/w0, sqrt(6/in)/w0). The original code only
re-initialises the weights, so biases keep PyTorch's nn.Linear default U(-1/sqrt(in),
1/sqrt(in)); we do the same (REFERENCE 2.4 fixes only the weights).
PyTorch import: layer{i}.kernel = Sequential[i].linear.weight.T, layer{i}.bias = .bias.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.torch_layers import torch_bias_init, uniform_init

Array = jax.Array


def pixel_coordinates(height: int, width: int) -> Array:
    """(H*W, 2) coordinates in [-1, 1]; row h*W + w holds (y_h, x_w)."""
    ys = jnp.linspace(-1.0, 1.0, height)
    xs = jnp.linspace(-1.0, 1.0, width)
    grid = jnp.stack(jnp.meshgrid(ys, xs, indexing="ij"), axis=-1)
    return grid.reshape(height * width, 2)


class ImplicitGON(nn.Module):
    """z (B, nz) -> image (B, H, W, C), unbounded (a linear last layer; data in [0, 1]).

    Parameters: layer0 .. layer{len(hidden)} with kernel (in, out) and bias (out,). No
    BatchNorm, so `train` changes nothing; it is accepted for the common GON interface.
    """

    nz: int = 32
    image_size: int = 28
    channels: int = 1
    hidden: tuple[int, ...] = (256, 256, 256, 256)
    w0: float = 30.0

    def __post_init__(self) -> None:
        for field in ("nz", "image_size", "channels"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"config.model.{field} must be a positive int, got {value!r}")
        if (not isinstance(self.hidden, (tuple, list)) or not self.hidden
                or not all(isinstance(h, int) and h >= 1 for h in self.hidden)):
            raise ValueError(f"config.model.hidden must be a non-empty sequence of positive ints, got {self.hidden!r}")
        if not self.w0 > 0:
            raise ValueError(f"config.model.w0 must be positive, got {self.w0!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Array, *, train: bool = False) -> Array:
        del train
        if z.ndim != 2 or z.shape[-1] != self.nz:
            raise ValueError(f"ImplicitGON expects z of shape (B, {self.nz}), got {z.shape}")
        b, side = z.shape[0], self.image_size
        coords = pixel_coordinates(side, side).astype(z.dtype)
        h = jnp.concatenate([jnp.broadcast_to(coords, (b, side * side, 2)),
                             jnp.broadcast_to(z[:, None, :], (b, side * side, self.nz))], axis=-1)
        widths = (*self.hidden, self.channels)
        for i, width in enumerate(widths):
            fan_in = h.shape[-1]
            bound = 1.0 / fan_in if i == 0 else (6.0 / fan_in) ** 0.5 / self.w0
            h = nn.Dense(width, kernel_init=uniform_init(bound), bias_init=torch_bias_init(fan_in),
                         name=f"layer{i}")(h)
            if i < len(widths) - 1:
                h = jnp.sin(self.w0 * h)
        return h.reshape(b, side, side, self.channels)
