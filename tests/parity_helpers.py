"""What the PyTorch parity tests share: layout helpers, the jit they use and their tolerances.

Tolerances (docs/PARITY.md has the measured values):
- Forward, float32: every output within FORWARD_RTOL * S of PyTorch's, S = max(1, largest
  |output| of the network). That is the issue's criterion; float32 rounding alone gives
  up to ~6e-6 S on the deepest network (the f-UNetGAN discriminator), because both sides
  carry rounding of the same size, not because they compute different things: in float64
  the same weights and inputs agree to ~1e-14 S.
- Gradients, float32: a deep net loses digits (PyTorch's own float32 gradient of the
  generator loss differs from its float64 one by ~5e-5 of the largest gradient), so each
  parameter's JAX gradient is held to PyTorch's own float32 accuracy, measured against a
  float64 PyTorch run of the same loss: max |g_jax - g_64| <= GRAD_RATIO * max |g_torch32 -
  g_64| + FORWARD_RTOL * S_g, S_g the network's largest gradient. GRAD_RATIO allows for a
  different summation order (XLA vs oneDNN reductions) giving an error of the same order,
  not the same value; the floor covers parameters whose exact gradient is 0 (the bias of a
  convolution followed by instance norm), where both sides return pure rounding noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from anomaly_core.interop.torch_import import NameMap, torch_to_flax

FORWARD_RTOL = 1e-5
GRAD_RATIO = 4.0
# XLA compile time dominates these tests on CPU. Without the backend's optimisation passes
# and with the classic elemental emitters it is three to four times shorter; what is
# computed does not change (float32 throughout, same HLO).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}

# Tiny tensors: one thread is fastest, and OpenMP threads spinning on a shared 2-core
# machine made PyTorch's forwards up to 50x slower.
torch.set_num_threads(1)


def jit(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    """jax.jit with the fast-compile options above."""
    return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)


def nhwc(t: torch.Tensor) -> np.ndarray:
    """A torch tensor as numpy, NCHW -> NHWC for 4-D tensors."""
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).numpy()


def forward_diffs(pairs: Iterable[tuple[Any, torch.Tensor, str]], what: str) -> dict[str, float]:
    """pairs (jax array, torch tensor, name); every output within FORWARD_RTOL * S.

    S = max(1, largest |value| over all outputs): an output that contracts larger internal
    activations (the pixel logits of the discriminator's features) inherits their rounding.
    Returns {name: max |diff| / S}.
    """
    pairs = [(np.asarray(j), nhwc(t), name) for j, t, name in pairs]
    scale = max(1.0, max(float(np.max(np.abs(t))) for _, t, _ in pairs))
    diffs = {}
    for j, t, name in pairs:
        assert j.shape == t.shape, f"{what} {name}: shape {j.shape} vs {t.shape}"
        diff = float(np.max(np.abs(j - t)))
        assert diff <= FORWARD_RTOL * scale, f"{what} {name}: max |diff| {diff:.3g} > {FORWARD_RTOL} * {scale:.3g}"
        diffs[name] = diff / scale
    return diffs


def assert_tree_close(got: Any, want: Any, what: str, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Leaf-wise closeness of two variable trees of the same structure."""
    flat_got = dict(jax.tree_util.tree_leaves_with_path(got))
    flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
    assert flat_got.keys() == flat_want.keys(), f"{what}: different variables"
    for path, w in flat_want.items():
        np.testing.assert_allclose(np.asarray(flat_got[path]), np.asarray(w), rtol=rtol, atol=atol,
                                   err_msg=f"{what} {jax.tree_util.keystr(path)}")


def float64_template(template: Any) -> Any:
    """The same variable shapes in float64 (use inside jax.enable_x64)."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float64), template)


def torch_copy(torch_module: torch.nn.Module, build: Callable[[], torch.nn.Module],
               dtype: torch.dtype) -> torch.nn.Module:
    """A copy in `dtype` (deepcopy fails on spectral norm's cached weight)."""
    clone = build().to(dtype)
    clone.load_state_dict(torch_module.state_dict())
    clone.train(torch_module.training)
    return clone


def torch_backward(modules: Iterable[torch.nn.Module], loss_fn: Callable[..., torch.Tensor], *inputs: Any) -> float:
    """loss = loss_fn(*modules, *inputs) and its backward; returns the loss (gradients in .grad)."""
    modules = list(modules)
    for m in modules:
        m.zero_grad()
    loss = loss_fn(*modules, *inputs)
    loss.backward()
    return loss.item()


def torch_grads_as_flax(torch_module: torch.nn.Module, template: Any, names: NameMap) -> Any:
    """Every parameter's .grad in the Flax 'params' layout (through the converter, `names`
    the network's name map)."""
    sd = dict(torch_module.state_dict())
    sd.update({k: p.grad for k, p in torch_module.named_parameters()})
    return torch_to_flax(sd, template, names)["params"]


def assert_grads_as_accurate(got: Any, want32: Any, want64: Any, what: str) -> float:
    """The gradient criterion of the module docstring, per parameter.

    got: JAX float32 gradients; want32, want64: PyTorch's in float32 and float64, all in the
    Flax layout. Returns max |g_jax - g_torch32| / S_g over all parameters.
    """
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want64), what
    flat = [(jax.tree_util.keystr(p), np.asarray(g), np.asarray(w32), np.asarray(w64, np.float64))
            for (p, g), w32, w64 in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want32),
                                        jax.tree_util.tree_leaves(want64))]
    scale = max(float(np.max(np.abs(w64))) for *_, w64 in flat)
    worst = 0.0
    for name, g, w32, w64 in flat:
        err, ref_err = float(np.max(np.abs(g - w64))), float(np.max(np.abs(w32 - w64)))
        assert err <= GRAD_RATIO * ref_err + FORWARD_RTOL * scale, (
            f"{what} {name}: |jax - torch64| {err:.3g} vs |torch32 - torch64| {ref_err:.3g} (scale {scale:.3g})")
        worst = max(worst, float(np.max(np.abs(g - w32))))
    return worst / scale
