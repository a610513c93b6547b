"""Mixed precision (config.model.dtype) and the other fast paths keep the math.

Tolerance. bfloat16 keeps 8 significant bits (7 stored + the implicit one): one rounding has
a relative error of at most 2^-8 = 0.39%. The deepest value compared, the encoder loss,
passes through about 25 rounded layers on its longest path (encoder, generator, and the
discriminator's contracting and expanding paths); if every layer added its full rounding
error in the same direction the result would be off by 25 x 2^-8 = 9.8%, so RTOL = 0.1.
Measured on these inputs: 0.004% (CAE) to 4.7% (discriminator pixel logits). A relative
error of exactly 0 fails too: it would mean the switch computed in float32 after all.
Not compared: the gradient penalty. Its input gradients are ill-conditioned at this
architecture (docs/BENCHMARKS.md: perturbing inputs and parameters by half a bfloat16 ulp
in float32 moves them by 33-50%), so no bfloat16 tolerance below that can be stated.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_core.networks.precision import compute_dtype
from anomaly_core.program.program import init_key
from configs.funetgan_base import base_config, shrink
from configs.gon_base import base_config as gon_base_config, shrink_gon
from funetgan_jax import losses
from funetgan_jax import networks as fnets
from funetgan_jax import train_state as fstate
from funetgan_jax.layers import pool_2x2
from gon_jax.build import build_gon_model, init_variables as gon_init
from gon_jax.losses import cae_mse_loss
from gon_jax.origin import gon_loss_and_updates

RTOL = 0.1  # see the module docstring: ~25 bfloat16 roundings of 2^-8 each on the longest path


def _compile(fn, *args):
    # Backend optimisation level 0: these tests check values, not speed, and it compiles ~3x faster.
    return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})


def _funetgan_config(dtype: str):
    config = shrink(base_config(), image_size=32, width=4)
    config.model.dtype = dtype
    return config


def _numpy_variables(shapes, seed: int = 0):
    """Variables with PyTorch's init scales drawn in numpy: kernels and biases U(+-1/sqrt(fan_in)),
    BatchNorm scale 1 / bias 0 / statistics (0, 1), unit spectral vectors. Compiling the
    init program instead costs ~25 s on a 2-core CPU, more than everything else here."""
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        names = [getattr(k, "key", "") for k in path]
        if names[-1] in ("scale", "var"):
            return jnp.ones(s.shape, s.dtype)
        if names[-1] == "mean" or (names[-1] == "bias" and names[-2].startswith(("bn", "out_bn"))):
            return jnp.zeros(s.shape, s.dtype)
        if names[0] == "spectral":
            v = rng.normal(size=s.shape)
            return jnp.asarray(v / np.linalg.norm(v), s.dtype)
        fan_in = int(np.prod(s.shape[:-1])) if names[-1] == "kernel" else 16
        bound = 1 / np.sqrt(fan_in)
        return jnp.asarray(rng.uniform(-bound, bound, s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def _dtypes(tree) -> set:
    return {leaf.dtype for leaf in jax.tree.leaves(tree)}


def test_bfloat16_networks_keep_float32_variables_and_compute_in_bfloat16():
    config = _funetgan_config("bfloat16")
    G, D, E = fnets.networks(config)
    state = jax.eval_shape(lambda r: fstate.init_state(config, r), jax.random.key(0))
    # params, spectral vectors, BatchNorm statistics and optimiser moments: all float32
    assert _dtypes(state) == {jnp.dtype(jnp.float32)} | {jnp.dtype(jnp.int32)}  # int32: Adam's step count
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    z = jax.ShapeDtypeStruct((2, config.model.z_dim), jnp.float32)
    fake = jax.eval_shape(lambda v, z: G.apply(v, z, train=False), state["g"], z)
    out = jax.eval_shape(lambda v, x: D.apply(v, x, train=False, return_features=True), state["d"], x)
    code = jax.eval_shape(lambda v, x: E.apply(v, x, train=False), state["e"], x)
    assert fake.dtype == code.dtype == jnp.bfloat16
    assert _dtypes(out) == {jnp.dtype(jnp.bfloat16)}
    # the losses read the outputs in float32
    g_loss = jax.eval_shape(lambda o: losses.generator_loss(o)[0], out)
    assert g_loss.dtype == jnp.float32
    # the default builds modules that compute in the input's dtype, as before the switch
    assert compute_dtype(_funetgan_config("float32").model) is None
    assert G.dtype == jnp.bfloat16


def test_bad_dtype_settings_name_the_setting():
    config = _funetgan_config("float16")
    with pytest.raises(ValueError, match=r"config\.model\.dtype"):
        fnets.networks(config)
    implicit = gon_base_config("implicit_gon", "mnist")
    implicit.model.dtype = "bfloat16"
    with pytest.raises(ValueError, match=r"config\.model\.dtype must be 'float32' for the implicit GON .*got 'bfloat16'"):
        build_gon_model(implicit.model)


def _relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(b - a) / np.linalg.norm(a))


def test_funetgan_bfloat16_losses_agree_with_float32():
    c32, c16 = _funetgan_config("float32"), _funetgan_config("bfloat16")
    shapes = jax.eval_shape(lambda r: fstate.init_state(c32, r), init_key(0))
    state = {k: _numpy_variables(shapes[k], i) for i, k in enumerate("gde")}
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(4, 32, 32, 3)), jnp.float32)
    z = jnp.asarray(rng.normal(size=(4, c32.model.z_dim)), jnp.float32)

    def values(config):
        G, D, E = fnets.networks(config)
        # Training-mode forwards: one power iteration gives each spectral norm a real estimate
        # (eval mode would divide by u^T W v of the random initial vectors).
        def apply(module, variables, inputs, **kwargs):
            return module.apply(variables, inputs, train=True, mutable=["spectral", "batch_stats"], **kwargs)[0]

        def fn(state, x, z):
            code = apply(E, state["e"], x)
            images = apply(G, state["g"], jnp.concatenate([z, code.astype(z.dtype)]))  # fakes, then G(E(x))
            out = apply(D, state["d"], jnp.concatenate([x, images.astype(x.dtype)]), return_features=True)
            n = x.shape[0]
            part = lambda i: jax.tree.map(lambda a: a[i * n:(i + 1) * n], out)  # noqa: E731
            g_loss, _ = losses.generator_loss(part(1))
            e_loss, e_metrics = losses.encoder_loss_terms(x, images[n:], part(0), part(2))
            return {"g_loss": g_loss, "e_loss": e_loss, "l_img": e_metrics["l_img"],
                    "pixel_logits_real": losses.logits_of(part(0))[1], "images": images}

        return _compile(fn, state, x, z)(state, x, z)

    a, b = values(c32), values(c16)
    assert a["images"].dtype == jnp.float32 and b["images"].dtype == jnp.bfloat16
    for k in ("g_loss", "e_loss", "l_img", "pixel_logits_real"):
        assert a[k].dtype == b[k].dtype == jnp.float32, k
        error = _relative_error(a[k], b[k])
        assert 0 < error < RTOL, f"{k}: relative error {error:.2e} (0 would mean the switch did nothing)"


@pytest.mark.parametrize("kind,preset", [("conv_gon", "mnist"), ("cae", "mnist")])
def test_gon_and_cae_bfloat16_losses_agree_with_float32(kind, preset):
    config = shrink_gon(gon_base_config(kind, preset))
    variables = _numpy_variables(jax.eval_shape(lambda r: gon_init(config.model, r), jax.random.key(1)), 1)
    s = config.model.image_size
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(4, s, s, config.model.channels)), jnp.float32)

    def loss_for(dtype):
        config.model.dtype = dtype
        model = build_gon_model(config.model)
        if kind == "cae":
            fn = lambda v, x: (cae_mse_loss(model.apply(v, x, train=False), x),  # noqa: E731
                               model.apply(v, x, train=False))
        else:
            fn = lambda v, x: (lambda r: (r[0], r[1][2]))(  # noqa: E731
                gon_loss_and_updates(v, x, model=model, train=True))
        return _compile(fn, variables, x)(variables, x)

    (l32, r32), (l16, r16) = loss_for("float32"), loss_for("bfloat16")
    assert r32.dtype == jnp.float32 and r16.dtype == jnp.bfloat16
    assert l32.dtype == l16.dtype == jnp.float32
    assert _dtypes(variables) == {jnp.dtype(jnp.float32)}
    assert 0 < _relative_error(l32, l16) < RTOL


def test_max_pool_matches_reduce_window_in_value_and_first_two_derivatives():
    # Values on a half-integer grid, so most windows hold ties: the gradient must go to the
    # first maximum of each window, as reduce_window's select_and_scatter (and torch) do.
    x = jnp.round(2 * jax.random.normal(jax.random.key(0), (2, 8, 6, 3))) / 2
    ref = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))  # noqa: E731
    new = lambda v: pool_2x2(v, "max")  # noqa: E731
    weights = jnp.arange(1.0, 1.0 + 4 * 3 * 3).reshape(1, 4, 3, 3)
    loss = lambda pool: (lambda v: jnp.sum(jnp.sin(pool(v)) * weights))  # noqa: E731
    np.testing.assert_array_equal(new(x), ref(x))
    g_ref, g_new = jax.grad(loss(ref))(x), jax.grad(loss(new))(x)
    np.testing.assert_array_equal(g_new, g_ref)
    assert int(jnp.sum(g_ref != 0)) == 2 * 4 * 3 * 3  # exactly one input per window gets the gradient
    hvp = lambda pool: jax.jvp(jax.grad(loss(pool)), (x,), (jnp.cos(x),))[1]  # noqa: E731
    np.testing.assert_array_equal(hvp(new), hvp(ref))
    # odd sizes drop the last row/column, like VALID pooling
    y = jax.random.normal(jax.random.key(1), (1, 5, 7, 2))
    np.testing.assert_array_equal(new(y), ref(y))
