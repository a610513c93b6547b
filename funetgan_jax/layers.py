"""Layers of the f-UNetGAN networks with PyTorch semantics: spectral-normalised conv/dense
and the parameter-free helpers (BatchNorm and the initialisers: anomaly_core.networks.torch_layers).

Spectral norm has two modes (`SPECTRAL_NORMS`, config.model.spectral_norm), both with
one power iteration per forward and their state in the `spectral` collection:
  'torch'  as `torch.nn.utils.spectral_norm`: stores `u` (out,) and `v` (in*kh*kw,); a
           training forward iterates and stores both, an eval forward uses the stored pair
           without iterating.
  'biggan' as the BigGAN layers (`SNConv2d`, `SNLinear`) of the original f-UNetGAN: stores
           `u` (out,) and `sigma` (1,) (the last estimate, kept like the original's `sv0`
           buffer but not used by the forward); EVERY forward, eval included, iterates from
           the stored u, and only a training forward stores the new u and sigma. v is not
           stored. `flax.linen.SpectralNorm` has these semantics, but it wraps a whole layer
           (its parameters move under `layer_instance`, which renames every parameter of
           every checkpoint) and cannot express 'torch'; one function serves both modes here.
PyTorch views its (out, in, kh, kw) weight as W = (out, in*kh*kw); our HWIO kernel viewed as
(kh*kw*in, out) is W transposed with the input axis in HWIO order, so `v` is stored in
HWIO-flatten order (a PyTorch `weight_v` must be permuted on import) and the singular
values are the same.

Initialisation mirrors PyTorch's Conv2d/Linear defaults (kernel and bias uniform in
+-1/sqrt(fan_in), anomaly_core.networks.torch_layers) because the reference trains from those defaults.

Mixed precision (`config.model.dtype`): every module takes `dtype`, the dtype it computes
and returns in (None, the default: the input's dtype, no cast; float32 in training, float64
in the parity tests); parameters stay float32. The spectral-norm power iteration and sigma,
and the instance-norm statistics, are computed in at least float32 whatever `dtype`.
"""

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from anomaly_core.networks.precision import at_least_f32, cast
from anomaly_core.networks.torch_layers import check_choice, torch_bias_init, torch_kernel_init

Array = jax.Array

_SN_EPS = 1e-12  # torch.nn.utils.spectral_norm default
_IN_EPS = 1e-5  # torch.nn.InstanceNorm2d default


def _l2_normalize(x: Array) -> Array:
    # torch.nn.functional.normalize: x / max(||x||, eps).
    return x / jnp.maximum(jnp.linalg.norm(x), _SN_EPS)


SPECTRAL_NORMS = ("torch", "biggan")


def spectral_normalize(module: nn.Module, kernel: Array, train: bool, mode: str = "torch") -> Array:
    """Returns kernel / sigma, declaring the power-iteration state in `module`'s `spectral` collection.

    kernel: (..., out) (HWIO conv or (in, out) dense). One power iteration
    v = normalize(W^T u), u = normalize(W v) with W = matrix^T, sigma = u^T W v (gradient
    through W only; u and v are constants for it). mode 'torch' iterates only when
    train=True and otherwise uses the stored (u, v); mode 'biggan' always iterates from the
    stored u. A training forward stores the new state (not during init, like BatchNorm
    statistics): (u, v) or (u, sigma). Straight after init u (and v) are random draws (as in
    torch), so a 'torch' eval forward before any training forward divides by no estimate of
    the spectral norm.
    """
    check_choice(mode, SPECTRAL_NORMS, "config.model.spectral_norm")
    matrix = kernel.reshape(-1, kernel.shape[-1])  # (in*kh*kw, out) == W^T
    fan, out = matrix.shape

    def draw(size: int) -> Callable[[], Array]:
        return lambda: _l2_normalize(jax.random.normal(module.make_rng("params"), (size,), jnp.float32))

    if train and not module.is_mutable_collection("spectral"):
        raise ValueError(
            f"{module.__class__.__name__} '{module.name}': train=True updates the spectral-norm "
            "state; pass mutable=['spectral', ...] to apply (or train=False)")
    u_var = module.variable("spectral", "u", draw(out))
    if mode == "torch":
        v_var = module.variable("spectral", "v", draw(fan))
        u, v = u_var.value, v_var.value
        if train:
            u, v = _power_iteration(matrix, u)
            if not module.is_initializing():
                u_var.value, v_var.value = u, v
        return kernel / (u @ (matrix.T @ v))  # u^T W v
    sigma_var = module.variable("spectral", "sigma", lambda: jnp.ones((1,), jnp.float32))
    u, v = _power_iteration(matrix, u_var.value)
    sigma = u @ (matrix.T @ v)
    if train and not module.is_initializing():
        u_var.value, sigma_var.value = u, jax.lax.stop_gradient(sigma)[None]
    return kernel / sigma


def _power_iteration(matrix: Array, u: Array) -> tuple[Array, Array]:
    """One step from u (out,) on W = matrix^T (matrix (fan, out)): (u', v), both unit, no gradient."""
    w_t = jax.lax.stop_gradient(matrix)
    v = _l2_normalize(w_t @ u)
    return _l2_normalize(w_t.T @ v), v


def convert_spectral_state(variables: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """`variables` with their spectral-norm state in the structure of `template` (the same
    network in another spectral-norm mode); params and the other collections unchanged.

      (u, sigma) -> (u, v): one power iteration from u, what a 'biggan' forward computes, so
          a 'torch' eval forward divides by exactly the sigma of the 'biggan' eval forward.
      (u, v) -> (u, sigma): sigma = u^T W v, the 'torch' eval sigma; a 'biggan' forward
          iterates once more from u, so outputs agree to the power iteration's convergence.
    """
    def walk(params: Mapping[str, Any], state: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, Any]:
        if "u" not in want:
            return {k: walk(params[k], state[k], want[k]) for k in want}
        if set(state) == set(want):
            return dict(state)
        kernel = jnp.asarray(params["kernel"], jnp.float32)
        matrix = kernel.reshape(-1, kernel.shape[-1])
        if "v" in want:
            u, v = _power_iteration(matrix, jnp.asarray(state["u"], jnp.float32))
            return {"u": u, "v": v}
        u, v = jnp.asarray(state["u"], jnp.float32), jnp.asarray(state["v"], jnp.float32)
        return {"u": u, "sigma": (u @ (matrix.T @ v))[None]}

    if "spectral" not in template:
        return dict(variables)
    return {**variables, "spectral": walk(variables["params"], variables["spectral"], template["spectral"])}


class SNConv(nn.Module):
    """Spectral-normalised 2-D convolution, stride 1, symmetric zero padding.

    (B, H, W, Cin) -> (B, H + 2p - k + 1, W + 2p - k + 1, features), in `dtype`.
    """

    features: int
    kernel_size: int
    padding: int = 0
    use_bias: bool = True
    sn_mode: str = "torch"  # SPECTRAL_NORMS
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        k, cin = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (k, k, cin, self.features))
        kernel = spectral_normalize(self, kernel, train, self.sn_mode)
        x = cast(x, self.dtype)
        y = jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), window_strides=(1, 1),
            padding=[(self.padding, self.padding)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", torch_bias_init(k * k * cin), (self.features,)).astype(x.dtype)
        return y


class SNDense(nn.Module):
    """Spectral-normalised dense layer: (..., in) -> (..., features), in `dtype`."""

    features: int
    use_bias: bool = True
    sn_mode: str = "torch"  # SPECTRAL_NORMS
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (fan_in, self.features))
        x = cast(x, self.dtype)
        y = x @ spectral_normalize(self, kernel, train, self.sn_mode).astype(x.dtype)
        if self.use_bias:
            y = y + self.param("bias", torch_bias_init(fan_in), (self.features,)).astype(x.dtype)
        return y


def instance_norm(x: Array) -> Array:
    """Instance norm without affine parameters (torch InstanceNorm2d defaults), NHWC.

    Statistics in at least float32; the output in x's dtype.
    """
    xf = at_least_f32(x)
    mean = jnp.mean(xf, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=(1, 2), keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + _IN_EPS)).astype(x.dtype)


def upsample_nearest(x: Array) -> Array:
    """Nearest-neighbour x2 upsampling: (B, H, W, C) -> (B, 2H, 2W, C)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def pool_2x2(x: Array, kind: str) -> Array:
    """2x2 stride-2 'max' or 'avg' pooling: (B, H, W, C) -> (B, H//2, W//2, C) (odd edges dropped)."""
    check_choice(kind, ("max", "avg"), "pool")
    if kind == "avg":
        return nn.avg_pool(x, (2, 2), strides=(2, 2))
    # Max as a selection of the first maximum of each window (jnp.argmax), which is what
    # reduce_window's gradient (select_and_scatter, `ge`) and torch's max_pool2d pick, so
    # values and derivatives of every order are those of nn.max_pool. The gradient-penalty
    # double backward through reduce_window becomes a variadic reduce_window carrying index
    # iotas, slow to run and to compile on CPU; this form is elementwise in every order
    # (D-loss gradient of the quickstart: compile 66 s -> 33 s on a 2-core CPU).
    b, h, w, c = x.shape
    windows = x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, c, 4)
    first = jnp.argmax(windows, axis=-1)[..., None] == jnp.arange(4)
    return jnp.sum(jnp.where(first, windows, 0), axis=-1)
