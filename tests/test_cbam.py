"""CBAM: gate ranges, hand-computed channel and spatial gates, composition, validation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funetgan_jax.cbam import CBAM, ChannelGate, SpatialGate

# Tiny models: XLA's optimisation passes and fusion emitters cost more compile time than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                   "xla_cpu_use_fusion_emitters": False})
B, H, W, C = 2, 8, 8, 16


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _conv7_same(s, kernel):
    """Cross-correlation of (B, H, W) with a (7, 7) kernel, zero padding 3 (PyTorch Conv2d)."""
    padded = np.pad(s, ((0, 0), (3, 3), (3, 3)))
    out = np.zeros_like(s)
    for di in range(7):
        for dj in range(7):
            out += kernel[di, dj] * padded[:, di:di + s.shape[1], dj:dj + s.shape[2]]
    return out


@pytest.fixture(scope="module")
def cbam():
    module = CBAM(reduction=4, spatial_norm="batch")
    x = jax.random.normal(jax.random.key(1), (B, H, W, C)) * 2.0
    variables = jit(lambda r: module.init(r, x, train=False))(jax.random.key(0))
    return module, variables, np.asarray(x)


def test_parameter_shapes(cbam):
    _, variables, _ = cbam
    shapes = jax.tree_util.tree_map(np.shape, variables)
    assert shapes["params"]["channel_gate"] == {
        "mlp_hidden": {"kernel": (C, C // 4), "bias": (C // 4,)},
        "mlp_out": {"kernel": (C // 4, C), "bias": (C,)}}
    assert shapes["params"]["spatial_gate"] == {"conv": {"kernel": (7, 7, 2, 1)}, "bn": {"scale": (1,), "bias": (1,)}}
    assert shapes["batch_stats"]["spatial_gate"] == {"bn": {"mean": (1,), "var": (1,)}}
    # Hidden width max(1, C // r): 8 channels with r = 16 keep one hidden unit.
    tiny = jax.eval_shape(lambda r: CBAM(16, "none").init(r, jnp.zeros((1, 4, 4, 8)), train=False),
                          jax.random.key(0))
    assert tiny["params"]["channel_gate"]["mlp_hidden"]["kernel"].shape == (8, 1)
    assert "bn" not in tiny["params"]["spatial_gate"] and "batch_stats" not in tiny


def test_gates_in_unit_interval_and_composition(cbam):
    module, variables, x = cbam
    p = variables["params"]
    cg = np.asarray(ChannelGate(4).apply({"params": p["channel_gate"]}, x))
    assert cg.shape == (B, 1, 1, C) and np.all((cg > 0) & (cg < 1))
    gated = x * cg
    sg = np.asarray(SpatialGate("batch").apply(
        {"params": p["spatial_gate"], "batch_stats": variables["batch_stats"]["spatial_gate"]}, gated, train=False))
    assert sg.shape == (B, H, W, 1) and np.all((sg > 0) & (sg < 1))
    y = jit(lambda v, x: module.apply(v, x, train=False))(variables, x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, gated * sg, rtol=1e-5, atol=1e-6)
    y_train, state = jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    assert y_train.shape == x.shape and np.all(np.isfinite(y_train))
    assert not np.allclose(state["batch_stats"]["spatial_gate"]["bn"]["mean"], 0.0)


def test_channel_gate_on_spatially_constant_input(cbam):
    _, variables, _ = cbam
    p = variables["params"]["channel_gate"]
    c = np.random.default_rng(0).normal(size=(B, C)).astype(np.float32)
    x = np.broadcast_to(c[:, None, None, :], (B, H, W, C))
    gate = ChannelGate(4).apply({"params": p}, x)
    # avg-pool == max-pool, so att = 2 * MLP(c).
    w1, b1 = np.asarray(p["mlp_hidden"]["kernel"]), np.asarray(p["mlp_hidden"]["bias"])
    w2, b2 = np.asarray(p["mlp_out"]["kernel"]), np.asarray(p["mlp_out"]["bias"])
    mlp = np.maximum(c @ w1 + b1, 0.0) @ w2 + b2
    np.testing.assert_allclose(np.asarray(gate)[:, 0, 0], _sigmoid(2.0 * mlp), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def channel_constant(cbam):
    _, variables, _ = cbam
    s = np.random.default_rng(1).normal(size=(B, H, W)).astype(np.float32)
    x = np.broadcast_to(s[..., None], (B, H, W, C))
    kernel = np.asarray(variables["params"]["spatial_gate"]["conv"]["kernel"])
    # max over channels == mean over channels == s, so both input maps see s.
    conv = _conv7_same(s, kernel[:, :, 0, 0] + kernel[:, :, 1, 0])
    return x, conv


def test_spatial_gate_without_norm(cbam, channel_constant):
    _, variables, _ = cbam
    x, conv = channel_constant
    params = {"conv": variables["params"]["spatial_gate"]["conv"]}
    gate = SpatialGate("none").apply({"params": params}, x, train=True)
    np.testing.assert_allclose(np.asarray(gate)[..., 0], _sigmoid(conv), rtol=1e-5, atol=1e-6)


def test_spatial_gate_with_batch_norm(cbam, channel_constant):
    _, variables, _ = cbam
    x, conv = channel_constant
    params = {"conv": variables["params"]["spatial_gate"]["conv"],
              "bn": {"scale": jnp.array([1.7]), "bias": jnp.array([-0.3])}}
    stats = variables["batch_stats"]["spatial_gate"]
    gate, state = SpatialGate("batch").apply({"params": params, "batch_stats": stats}, x, train=True,
                                             mutable=["batch_stats"])
    mean, var = conv.mean(), conv.var()
    np.testing.assert_allclose(np.asarray(gate)[..., 0],
                               _sigmoid((conv - mean) / np.sqrt(var + 1e-5) * 1.7 - 0.3), rtol=1e-4, atol=1e-5)
    # torch momentum 0.01: running = 0.99 * running + 0.01 * batch (initial mean 0, var 1), the
    # running variance from the unbiased batch variance as in torch.
    n = conv.size
    np.testing.assert_allclose(state["batch_stats"]["bn"]["mean"], [0.01 * mean], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(state["batch_stats"]["bn"]["var"], [0.99 + 0.01 * var * n / (n - 1)], rtol=1e-6)
    gate_eval = SpatialGate("batch").apply({"params": params, "batch_stats": stats}, x, train=False)
    np.testing.assert_allclose(np.asarray(gate_eval)[..., 0], _sigmoid(conv / np.sqrt(1 + 1e-5) * 1.7 - 0.3),
                               rtol=1e-5, atol=1e-6)


def test_invalid_settings():
    with pytest.raises(ValueError, match="config.model.spatial_norm"):
        CBAM(spatial_norm="layer")
    with pytest.raises(ValueError, match="config.model.spatial_norm"):
        SpatialGate("group")
    with pytest.raises(ValueError, match="config.model.cbam_reduction"):
        CBAM(reduction=0)
