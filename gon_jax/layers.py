"""GON's layers: PyTorch's ConvTranspose2d (`TorchConvTranspose`), the convolutional GON
decoder (`ConvDecoder`, docs/METHODS.md 2.2, 2.3, 2.5) and its stage presets.

One module, `ConvDecoder`, takes a latent z (B, nz), views it as a 1x1 image (B, 1, 1, nz)
(PyTorch's (B, nz, 1, 1)) and applies a list of stages; every stage but the last is
ConvTranspose -> BatchNorm -> activation, the last is ConvTranspose -> output activation.
BatchNorm and the initialisers (PyTorch's defaults, kernel and bias U(+-1/sqrt(fan_in)),
because the references train from those) are anomaly_core.networks.torch_layers'.

Weight import from PyTorch (NCHW) into these modules:
  ConvTranspose2d.weight (in, out, kh, kw) -> `kernel` = weight.permute(2, 3, 1, 0), i.e.
      (kh, kw, out, in); no spatial flip (lax.conv_transpose with transpose_kernel=True
      flips internally exactly as PyTorch's transposed convolution does).
  ConvTranspose2d.bias / Conv2d.bias / Linear.bias (out,) -> `bias` unchanged.
  Conv2d.weight (out, in, kh, kw) -> `kernel` = weight.permute(2, 3, 1, 0), (kh, kw, in, out).
  Linear.weight (out, in) -> `kernel` = weight.T, (in, out).
  BatchNorm2d weight, bias -> params `scale`, `bias`; running_mean, running_var ->
      batch_stats `mean`, `var` (num_batches_tracked is not used).

Mixed precision (`config.model.dtype`): `dtype` is the dtype a module computes and returns
in (None, the default: the input's dtype, no cast); parameters stay float32, BatchNorm
statistics are computed in at least float32.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.precision import cast
from anomaly_core.networks.torch_layers import BatchNorm, check_choice, torch_bias_init, torch_kernel_init

Array = jax.Array
# (out_channels, kernel, stride, padding) of one PyTorch ConvTranspose2d.
Stage = tuple[int, int, int, int]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"elu": nn.elu, "relu": nn.relu}
OUT_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "sigmoid": nn.sigmoid}

class TorchConvTranspose(nn.Module):
    """PyTorch's ConvTranspose2d(in, features, k, stride s, padding p, output_padding op), NHWC.

    (B, H, W, in) -> (B, (H-1)*s - 2p + k + op, (W-1)*s - 2p + k + op, features), in `dtype`
    (None: x's). Parameters as flax.linen.ConvTranspose(transpose_kernel=True) names and
    initialises them: kernel (k, k, features, in) = torch weight.permute(2, 3, 1, 0), bias.
      out[o] = sum over i, t with o = i*s - p + t of x[i] * kernel[t]   (per spatial axis)
    Computed as ONE stride-1 correlation with s*s*features output channels, followed by a
    depth-to-space shuffle (the sub-pixel form): output row o' = o + p = s*q + phase takes
    x[q - m] * kernel[phase + s*m], m = 0 .. ceil(k/s) - 1, so each phase is an ordinary
    convolution with a strided slice of the kernel; the correlation is written as image
    patches @ kernel matrix. Same sums as lax.conv_transpose, but every derivative is a
    matmul, pad or slice: lax.conv_transpose's kernel gradient is an rhs-dilated convolution,
    and the second-order GON step adds window-reversed ones, all of which XLA:CPU runs on its
    naive loop emitter (60% of the GON step's time in benchmarks/train_steps.py).
    """

    features: int
    kernel_size: int
    stride: int
    padding: int = 0
    output_padding: int = 0
    use_bias: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k, s, p, op, co = self.kernel_size, self.stride, self.padding, self.output_padding, self.features
        b, h, w, ci = x.shape
        kernel = self.param("kernel", torch_kernel_init, (k, k, co, ci))
        x = cast(x, self.dtype)
        if min(h, w) < 1 or (min(h, w) - 1) * s - 2 * p + k + op < 1:
            raise ValueError(f"ConvTranspose2d(k={k}, stride={s}, padding={p}, output_padding={op}) has no output "
                             f"for an input of {h}x{w}")
        if h == w == 1:
            y = self._from_one_pixel(x, kernel)
        else:
            y = self._sub_pixel(x, kernel)
        if self.use_bias:
            bias = self.param("bias", torch_bias_init(co * k * k), (co,))
            y = y + bias.astype(y.dtype)
        return y

    def _from_one_pixel(self, x: Array, kernel: Array) -> Array:
        """A 1x1 input (the GON's first layer, from the latent): out[o] = x * kernel[o + p], one matmul.
        The sub-pixel form would pad the single pixel to a k x k window per output pixel (16x the
        multiply-adds at k = 4, half of the GON step's FLOPs)."""
        k, p, op = self.kernel_size, self.padding, self.output_padding
        n_out = k - 2 * p + op
        taps = kernel[p:p + n_out, p:p + n_out]  # output_padding rows past the kernel's end are 0
        taps = jnp.pad(taps, ((0, n_out - taps.shape[0]), (0, n_out - taps.shape[1]), (0, 0), (0, 0)))
        return jnp.einsum("bc,yxoc->byxo", x[:, 0, 0, :], taps.astype(x.dtype))

    def _sub_pixel(self, x: Array, kernel: Array) -> Array:
        k, s, p, op, co = self.kernel_size, self.stride, self.padding, self.output_padding, self.features
        b, h, w, ci = x.shape
        taps = -(-k // s)  # kernel taps per phase, ceil(k / s)
        sub = jnp.pad(kernel, ((0, s * taps - k), (0, s * taps - k), (0, 0), (0, 0)))
        # sub[j_y, j_x, ci, (phase_y, phase_x, co)] = kernel[phase_y + s*(taps-1-j_y), phase_x + s*(taps-1-j_x)]
        sub = sub.reshape(taps, s, taps, s, co, ci)[::-1, :, ::-1]
        sub = sub.transpose(0, 2, 5, 1, 3, 4).reshape(taps * taps * ci, s * s * co).astype(x.dtype)

        def window(n_in: int) -> tuple[tuple[int, int], int, int]:
            n_out = (n_in - 1) * s - 2 * p + k + op
            q_first, q_last = p // s, (n_out - 1 + p) // s
            n = q_last - q_first + 1  # phase rows computed
            lo = taps - 1 - q_first  # >= 0 because p <= k - 1
            return (lo, max(n - 1 + taps - n_in - lo, 0)), n, n_out

        (pad_h, n_h, out_h), (pad_w, n_w, out_w) = window(h), window(w)
        # The stride-1 convolution as patches @ matrix: its derivatives of every order are then
        # matmuls, pads and slices. As a convolution, XLA turned the kernel gradient of the
        # GON's second-order step into window-reversed convolutions, which XLA:CPU runs on
        # its naive emitter too.
        xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
        patches = jnp.concatenate([xp[:, jy:jy + n_h, jx:jx + n_w] for jy in range(taps) for jx in range(taps)],
                                  axis=-1)  # (B, n_h, n_w, taps*taps*ci), tap-major like `sub`
        y = patches @ sub
        y = y.reshape(b, n_h, n_w, s, s, co).transpose(0, 1, 3, 2, 4, 5).reshape(b, n_h * s, n_w * s, co)
        first = p - s * (p // s)  # row s*q_first + phase - p of the output is row s*n + phase here
        return y[:, first:first + out_h, first:first + out_w]


def torch_conv_transpose(features: int, kernel_size: int, stride: int, padding: int = 0,
                         output_padding: int = 0, *, use_bias: bool = True, dtype: Any = None,
                         name: str | None = None) -> TorchConvTranspose:
    """The module computing PyTorch's ConvTranspose2d(in, features, k, s, p, op); see TorchConvTranspose.

    (B, H, W, in) -> (B, (H-1)*s - 2p + k + op, (W-1)*s - 2p + k + op, features). Kernel (k, k, features, in).
    """
    if not 0 <= padding <= kernel_size - 1:
        raise ValueError(f"ConvTranspose padding must be in [0, kernel-1={kernel_size - 1}], got {padding}")
    if not 0 <= output_padding < stride:
        raise ValueError(f"ConvTranspose output_padding must be in [0, stride={stride}), got {output_padding}")
    return TorchConvTranspose(features, kernel_size, stride, padding, output_padding, use_bias=use_bias,
                              dtype=dtype, name=name)


def _check_stages(stages: Any, setting: str) -> None:
    if not isinstance(stages, (tuple, list)) or not stages:
        raise ValueError(f"{setting} must be a non-empty sequence of (out_channels, kernel, stride, padding)")
    for i, stage in enumerate(stages):
        if (not isinstance(stage, (tuple, list)) or len(stage) != 4
                or not all(isinstance(v, int) for v in stage)):
            raise ValueError(f"{setting}[{i}] must be 4 ints (out_channels, kernel, stride, padding), got {stage!r}")
        out, k, s, p = stage
        if out < 1 or k < 1 or s < 1 or not 0 <= p <= k - 1:
            raise ValueError(f"{setting}[{i}] = {stage!r}: need out_channels, kernel, stride >= 1 "
                             "and 0 <= padding < kernel")


def decoder_output_size(stages: Sequence[Stage]) -> int:
    """Spatial side of a ConvDecoder's output for a 1x1 input: side = (side-1)*s - 2p + k per stage."""
    side = 1
    for _, k, s, p in stages:
        side = (side - 1) * s - 2 * p + k
    return side


class ConvDecoder(nn.Module):
    """z (B, nz) -> image (B, H, W, C) in `dtype`; tanh output in (-1, 1), sigmoid output in (0, 1).

    stages: (out_channels, kernel, stride, padding) per ConvTranspose (all with bias); each
    but the last is followed by BatchNorm (torch momentum 0.1, eps 1e-5) and
    `activation`. Parameters: convt{i} (kernel, bias), bn{i} (scale, bias); statistics
    batch_stats/bn{i}/(mean, var). train=True normalises with batch statistics and
    updates the running ones (apply with mutable=['batch_stats']).
    """

    nz: int
    stages: tuple[Stage, ...]
    activation: str = "elu"
    out_activation: str = "tanh"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Any = None  # computation dtype (None: the input's); params stay float32

    def __post_init__(self) -> None:
        if not isinstance(self.nz, int) or self.nz < 1:
            raise ValueError(f"config.model.nz must be a positive int, got {self.nz!r}")
        _check_stages(self.stages, "config.model.stages")
        check_choice(self.activation, tuple(ACTIVATIONS), "config.model.activation")
        check_choice(self.out_activation, tuple(OUT_ACTIVATIONS), "config.model.out_activation")
        super().__post_init__()

    @nn.compact
    def __call__(self, z: Array, *, train: bool = False) -> Array:
        if z.ndim != 2 or z.shape[-1] != self.nz:
            raise ValueError(f"ConvDecoder expects z of shape (B, {self.nz}), got {z.shape}")
        h = z[:, None, None, :]
        last = len(self.stages) - 1
        for i, (out, k, s, p) in enumerate(self.stages):
            h = torch_conv_transpose(out, k, s, p, dtype=self.dtype, name=f"convt{i}")(h)
            if i < last:
                h = BatchNorm(self.bn_momentum, self.bn_epsilon, self.dtype, name=f"bn{i}")(h, train=train)
                h = ACTIVATIONS[self.activation](h)
        return OUT_ACTIVATIONS[self.out_activation](h)


def mvtec_stages(ngf: int = 124, channels: int = 3) -> tuple[Stage, ...]:
    """REFERENCE 2.2: 1 -> 4 -> 8 -> 16 -> 32 -> 64."""
    return ((8 * ngf, 4, 1, 0), (4 * ngf, 4, 2, 1), (2 * ngf, 4, 2, 1), (ngf, 4, 2, 1), (channels, 4, 2, 1))


def mnist_stages(ngf: int = 64, channels: int = 1) -> tuple[Stage, ...]:
    """REFERENCE 2.3: 1 -> 4 -> 7 (k3 s2 p1) -> 14 -> 28."""
    return ((4 * ngf, 4, 1, 0), (2 * ngf, 3, 2, 1), (ngf, 4, 2, 1), (channels, 4, 2, 1))


def vae32_stages(ngf: int = 32, channels: int = 1) -> tuple[Stage, ...]:
    """Original Variational GON decoder (REFERENCE 2.5): 1 -> 4 -> 8 -> 16 -> 32."""
    return ((4 * ngf, 4, 1, 0), (2 * ngf, 4, 2, 1), (ngf, 4, 2, 1), (channels, 4, 2, 1))


def mvtec_conv_gon(nz: int = 100, ngf: int = 124, channels: int = 3) -> ConvDecoder:
    """Conv GON of the MVTec notebook: 64x64xC, ELU, tanh (data in [-1, 1])."""
    return ConvDecoder(nz, mvtec_stages(ngf, channels), activation="elu", out_activation="tanh")


def mnist_conv_gon(nz: int = 100, ngf: int = 64, channels: int = 1) -> ConvDecoder:
    """Conv GON of the corrupted-MNIST notebook: 28x28xC, ELU, tanh (data in [0, 1])."""
    return ConvDecoder(nz, mnist_stages(ngf, channels), activation="elu", out_activation="tanh")
