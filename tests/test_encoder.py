"""Encoder: tiny-size compute, channel-major flatten, spectral norm of every kernel after
power iterations, the average-pooling EBlock, exact full-size parameter count."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anomaly_core.networks.summary import count_params
from funetgan_jax.build import build_encoder, default_model_config, init_variables
from funetgan_jax.discriminator import ResidualConv
from funetgan_jax.encoder import Encoder
from funetgan_jax.layers import pool_2x2
from test_layers import random_variables

# Tiny models: XLA's optimisation passes and fusion emitters cost more compile time than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                   "xla_cpu_use_fusion_emitters": False})
B, Z, WIDTH, SIZE = 2, 8, 4, 32
STEPS = 200


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def dense(cin, cout):
    return cin * cout + cout


def eblock(cin, cout):  # preact, down: the 1x1 shortcut is always learned
    return conv(3, cin, cout) + conv(3, cout, cout) + conv(1, cin, cout)


@pytest.fixture(scope="module")
def trained():
    """Variables after STEPS training-mode forwards, the first training output, and an eval
    forward that records the last block's output and the flattened vector fed to `linear`."""
    module = Encoder(z_dim=Z, width=WIDTH)
    x = jax.random.uniform(jax.random.key(1), (B, SIZE, SIZE, 3))
    variables = random_variables(jax.eval_shape(lambda r: init_variables(module, r, x.shape), jax.random.key(0)))
    step = jit(lambda v, x: module.apply(v, x, train=True, mutable=["spectral"]))
    z_train, state = step(variables, x)
    trained = {**variables, **state}
    for _ in range(STEPS - 1):
        _, state = step(trained, x)
        trained = {**trained, **state}

    @jit
    def evaluate(v, x):
        seen = {}

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.name == "block5":
                seen["block5"] = out
            if context.method_name == "__call__" and context.module.name == "linear":
                seen["flat"] = args[0]
            return out

        with nn.intercept_methods(record):
            z = module.apply(v, x, train=False)
        return z, seen

    z_eval, seen = evaluate(trained, x)
    z_again, _ = evaluate(trained, x)
    return variables, trained, z_train, z_eval, z_again, seen


def test_shapes_and_range(trained):
    variables, _, z_train, z_eval, z_again, seen = trained
    for z in (z_train, z_eval):
        assert z.shape == (B, Z) and np.all(np.isfinite(z))
        assert np.all(np.abs(z) < 1) and np.std(z) > 0
    np.testing.assert_array_equal(z_eval, z_again)
    shapes = jax.tree_util.tree_map(np.shape, variables["params"])
    assert shapes["input_conv"]["kernel"] == (3, 3, 3, WIDTH)
    widths = [shapes[f"block{i}"]["conv2"]["kernel"][-1] for i in range(1, 6)]
    assert widths == [2 * WIDTH, 4 * WIDTH, 8 * WIDTH, 16 * WIDTH, 16 * WIDTH]
    assert all(set(shapes[f"block{i}"]) == {"conv1", "conv2", "conv_sc"} for i in range(1, 6))
    assert shapes["linear"]["kernel"] == (16 * WIDTH * (SIZE // 32) ** 2, Z)
    assert "batch_stats" not in variables


def test_flatten_is_channel_major(trained):
    *_, seen = trained
    h = np.asarray(seen["block5"])  # (B, 1, 1, 16w) at 32 px
    assert h.shape == (B, SIZE // 32, SIZE // 32, 16 * WIDTH)
    np.testing.assert_array_equal(seen["flat"], h.transpose(0, 3, 1, 2).reshape(B, -1))


def test_every_normalised_kernel_has_unit_spectral_norm(trained):
    _, variables, *_ = trained
    params, spectral = variables["params"], variables["spectral"]
    checked = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(spectral):
        if path[-1].key != "u":
            continue
        names = [p.key for p in path[:-1]]
        layer_params, layer_spectral = params, spectral
        for name in names:
            layer_params, layer_spectral = layer_params[name], layer_spectral[name]
        kernel = np.asarray(layer_params["kernel"])
        matrix = kernel.reshape(-1, kernel.shape[-1])  # (kh*kw*in, out) == W^T
        u = np.asarray(layer_spectral["u"])
        if "v" in layer_spectral:  # torch spectral norm (first conv, linear): eval uses the stored pair
            v = np.asarray(layer_spectral["v"])
        else:  # BigGAN-style (the blocks, by default): eval runs one more power iteration from u
            v = matrix @ u / np.linalg.norm(matrix @ u)
            u = matrix.T @ v / np.linalg.norm(matrix.T @ v)
        sigma = u @ matrix.T @ v  # what eval divides by
        top = np.linalg.svd(matrix / sigma, compute_uv=False)[0]
        assert abs(top - 1.0) < 1e-3, f"{'/'.join(names)}: top singular value {top}"
        checked += 1
    assert checked == 1 + 5 * 3 + 1  # input conv, 3 convs per block, linear


def test_eblock_pools_by_average():
    x = jax.random.normal(jax.random.key(2), (B, 8, 8, 3)) * 2 + 1
    block = ResidualConv(6, preact=True, down=True, pool="avg", shortcut=False)
    variables = random_variables(jax.eval_shape(lambda r: block.init(r, x, train=False), jax.random.key(0)), 3)
    seen = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.module.name == "conv2":
            seen["conv2"] = out
        return out

    with nn.intercept_methods(record):
        y = block.apply(variables, x, train=False)
    np.testing.assert_allclose(y, pool_2x2(seen["conv2"], "avg"), rtol=1e-6, atol=1e-6)
    assert not np.allclose(y, pool_2x2(seen["conv2"], "max"), atol=1e-3)


def test_attention_switch_and_invalid_inputs():
    x = jnp.zeros((1, SIZE, SIZE, 3))
    with_cbam = jax.eval_shape(lambda r: Encoder(Z, WIDTH, attention="cbam").init(r, x, train=False),
                               jax.random.key(0))
    assert all("cbam" in with_cbam["params"][f"block{i}"] for i in range(1, 6))
    with pytest.raises(ValueError, match="config.model.e_attention"):
        Encoder(attention="self")
    with pytest.raises(ValueError, match="divisible by 32"):
        jax.eval_shape(lambda r: Encoder(Z, WIDTH).init(r, jnp.zeros((1, 48, 48, 3)), train=False),
                       jax.random.key(0))


def test_full_size_parameter_count():
    w, z = 64, 100
    expected = (
        conv(3, 3, w)                            # input conv      1,792
        + eblock(w, 2 * w)                       # 128 -> 64     229,760
        + eblock(2 * w, 4 * w)                   # 64 -> 32      918,272
        + eblock(4 * w, 8 * w)                   # 32 -> 16    3,671,552
        + eblock(8 * w, 16 * w)                  # 16 -> 8    14,683,136
        + eblock(16 * w, 16 * w)                 # 8 -> 4     19,926,016
        + dense(16 * w * 4 * 4, z)               # SN linear   1,638,500
    )
    assert expected == 41_069_028
    module = build_encoder(default_model_config())
    variables = jax.eval_shape(lambda r: init_variables(module, r, (1, 128, 128, 3)), jax.random.key(0))
    assert count_params(variables["params"]) == expected
