"""PyTorch-semantics primitives shared by the methods' networks: PyTorch's default
initialisers, BatchNorm with torch.nn.BatchNorm2d's statistics, and the choice check for
settings. Pure JAX/Flax (torch is not imported); no method-specific knowledge.

Initialisation mirrors PyTorch's defaults because the reference implementations train
from them: Conv2d, ConvTranspose2d and Linear draw weight and bias from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform(a=sqrt(5)) for the weight), where
fan_in = weight.size(1) * kh * kw. Flax kernels keep the output features last, so
fan_in = prod(shape[:-1]) in every layout used here:
  Conv HWIO (kh, kw, in, out)                  -> kh * kw * in
  Dense (in, out)                              -> in
  ConvTranspose (kh, kw, out, in) (torch weight (in, out, kh, kw).permute(2, 3, 1, 0))
                                               -> kh * kw * out, PyTorch's fan_in for ConvTranspose2d.

Variable names follow flax.linen.BatchNorm (params scale, bias; batch_stats mean, var):
anomaly_core/interop/torch_import.py maps PyTorch checkpoints onto them.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core import settings
from anomaly_core.networks.precision import at_least_f32

Array = jax.Array
Initializer = Callable[..., Array]


def _uniform(key: Array, shape: Sequence[int], dtype: Any, bound: float) -> Array:
    # Drawn flat, then reshaped (the same values): XLA:CPU compiles the (partitionable)
    # threefry for a 4-D shape several times slower than for the same number of values in 1-D.
    return jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound).reshape(shape)


def _bound(fan_in: int) -> float:
    return 1.0 / float(fan_in) ** 0.5


def uniform_init(bound: float) -> Initializer:
    """Initializer U(-bound, bound), any shape."""
    return lambda key, shape, dtype=jnp.float32: _uniform(key, shape, dtype, bound)


def torch_kernel_init(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
    """PyTorch's default weight init for a kernel (..., out): U(+-1/sqrt(prod(shape[:-1])))."""
    return _uniform(key, shape, dtype, _bound(math.prod(shape[:-1])))


def torch_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in as for the layer's kernel."""
    return uniform_init(_bound(fan_in))


def check_choice(value: Any, choices: Sequence[Any], setting: str) -> None:
    """Raises settings.SettingError naming `setting` (e.g. 'config.model.activation') unless
    `value` is one of `choices`: a module's own argument check, in the config checks' style."""
    if value not in tuple(choices):
        raise settings.error(setting, value, f"one of {tuple(choices)}")


class BatchNorm(nn.Module):
    """BatchNorm over all axes but the last, with torch.nn.BatchNorm2d semantics: (..., C) -> (..., C).

    train=True normalises with the biased batch variance and updates the running variance
    with the unbiased one (n / (n - 1)), as torch does (flax.linen.BatchNorm uses the biased
    one for both); train=False uses the running statistics. `momentum` is Flax's convention,
    running = momentum * running + (1 - momentum) * batch, i.e. 1 - PyTorch's momentum (torch's
    default 0.1 is 0.9 here). The batch variance is two-pass, so a batch of identical
    activations (the GON origin z0 = 0) has variance 0 up to the rounding of the mean, not the
    cancellation error of E[x^2] - E[x]^2. Running statistics are not updated during init.
    Statistics and normalisation in at least float32, the output in `dtype` (None: x's dtype).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        out_dtype = x.dtype if self.dtype is None else self.dtype
        x = at_least_f32(x)
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        running_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            if not self.is_initializing():
                if not self.is_mutable_collection("batch_stats"):
                    raise ValueError(
                        f"{type(self).__name__} '{self.name}': train=True updates the running statistics; "
                        "pass mutable=['batch_stats'] to apply (or train=False)")
                n = x.size // c  # torch refuses n == 1 in training; the biased value is kept then
                m = self.momentum
                running_mean.value = m * running_mean.value + (1 - m) * mean
                running_var.value = m * running_var.value + (1 - m) * var * (n / max(n - 1, 1))
        else:
            mean, var = running_mean.value, running_var.value
        return ((x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias).astype(out_dtype)
