"""Generator: tiny-size compute, channel-major projection, exact full-size parameter count,
and the model-config builders / parameter overview (funetgan_jax.build, anomaly_core.networks.summary)."""

import functools

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from anomaly_core.networks.summary import count_params, parameter_summary
from funetgan_jax.build import (build_discriminator, build_encoder, build_generator, default_model_config,
                                describe, init_variables)
from funetgan_jax.generator import Generator, generator_multipliers
from test_layers import random_variables

# Tiny models: XLA's optimisation passes and fusion emitters cost more compile time than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                   "xla_cpu_use_fusion_emitters": False})
B, Z, WIDTH, SIZE = 2, 8, 4, 32


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def dense(cin, cout):
    return cin * cout + cout


def cbam(c, r=16):
    h = max(1, c // r)
    return dense(c, h) + dense(h, c) + conv(7, 2, 1, bias=False) + 2  # + BatchNorm scale, bias


def gres_block(cin, cout):
    return conv(3, cin, cout) + conv(3, cout, cout) + conv(1, cin, cout)


@pytest.fixture(scope="module")
def tiny():
    module = Generator(z_dim=Z, width=WIDTH, image_size=SIZE, channels=3, cbam_reduction=4)
    z = np.random.default_rng(1).normal(size=(B, Z)).astype(np.float32)
    abstract = jax.eval_shape(lambda r: init_variables(module, r, (B, Z)), jax.random.key(0))
    return module, random_variables(abstract), z


@pytest.fixture(scope="module")
def runs(tiny):
    """Per output mode: a training forward, then an eval forward (with the updated state)
    that records the projection's output and the first block's input."""
    module, variables, z = tiny
    results = {}
    for output in ("relu_tanh", "tanh", "linear"):
        m = module.clone(output=output)

        @jit
        def go(variables, z):
            y_train, state = m.apply(variables, z, train=True, mutable=["spectral", "batch_stats"])
            seen = {}

            def record(next_fun, args, kwargs, context):
                out = next_fun(*args, **kwargs)
                if context.method_name == "__call__" and context.module.name in ("proj_z", "block1"):
                    seen[context.module.name] = (args[0], out)
                return out

            # Eval after one training step: straight after init the stored u, v are random and
            # sigma = u^T W v is no estimate of the spectral norm (PyTorch spectral_norm alike).
            with nn.intercept_methods(record):
                y_eval = m.apply({**variables, **state}, z, train=False)
            return y_train, y_eval, state, seen

        results[output] = jax.tree_util.tree_map(np.asarray, go(variables, z))
    return results


def test_multipliers_and_size_validation():
    assert generator_multipliers(128) == (16, 16, 8, 4, 2, 1)
    assert generator_multipliers(32) == (8, 4, 2, 1)
    assert generator_multipliers(8) == (2, 1)
    assert generator_multipliers(256) == (16, 16, 16, 8, 4, 2, 1)
    for bad in (0, 4, 6, 12, 100, 130):
        with pytest.raises(ValueError, match="config.model.image_size"):
            Generator(image_size=bad)
    with pytest.raises(ValueError, match="config.model.generator_output"):
        Generator(output="sigmoid")


def test_tiny_shapes_and_output_ranges(tiny, runs):
    _, variables, _ = tiny
    shapes = jax.tree_util.tree_map(np.shape, variables["params"])
    assert shapes["proj_z"]["kernel"] == (Z, 8 * WIDTH * 4 * 4)  # 32 px: multipliers (8, 4, 2, 1)
    assert [shapes[f"block{i}"]["conv2"]["kernel"][-1] for i in (1, 2, 3)] == [4 * WIDTH, 2 * WIDTH, WIDTH]
    assert "block4" not in shapes and shapes["out_conv"]["kernel"] == (3, 3, WIDTH, 3)
    for output, low in (("relu_tanh", 0.0), ("tanh", -1.0)):
        y_train, y_eval, state, _ = runs[output]
        for y in (y_train, y_eval):
            assert y.shape == (B, SIZE, SIZE, 3) and np.all(np.isfinite(y)) and y.std() > 0
            # relu_tanh: [0, 1); tanh: (-1, 1).
            assert (np.all(y >= 0) if output == "relu_tanh" else np.all(y > -1)) and np.all(y < 1)
        assert set(state) == {"spectral", "batch_stats"}
    assert np.min(runs["tanh"][0]) < 0  # 'tanh' really reaches below zero, unlike 'relu_tanh'
    assert np.mean(runs["relu_tanh"][0] == 0) > 0.1  # ReLU before tanh clips to 0


def test_linear_output_is_the_pre_activation(runs):
    """'linear' returns what 'tanh' squashes (same parameters and latents), so it is unbounded."""
    for k in (0, 1):  # the training and the eval forward
        np.testing.assert_allclose(np.tanh(runs["linear"][k]), runs["tanh"][k], rtol=1e-5, atol=1e-6)
    assert np.abs(runs["linear"][0]).max() > np.abs(runs["tanh"][0]).max()


def test_projection_is_reshaped_channel_major(runs):
    seen = runs["relu_tanh"][3]
    projected, block_input = seen["proj_z"][1], seen["block1"][0]
    c0 = 8 * WIDTH
    np.testing.assert_array_equal(block_input, projected.reshape(B, c0, 4, 4).transpose(0, 2, 3, 1))
    # e.g. channel 1 at pixel (0, 0) is projection unit 16, as in PyTorch's view(-1, C, 4, 4).
    np.testing.assert_array_equal(block_input[:, 0, 0, 1], projected[:, 16])


def test_full_size_parameter_count():
    w, z = 64, 100
    expected = (
        dense(z, 16 * w * 4 * 4)                                      # proj_z 1,654,784
        + gres_block(16 * w, 16 * w) + cbam(16 * w)                   # 4 -> 8       19,926,016 + 132,260
        + gres_block(16 * w, 8 * w) + cbam(8 * w)                     # 8 -> 16       7,603,712 + 33,412
        + gres_block(8 * w, 4 * w) + cbam(4 * w)                      # 16 -> 32      1,901,312 + 8,564
        + gres_block(4 * w, 2 * w) + cbam(2 * w)                      # 32 -> 64        475,520 + 2,284
        + gres_block(2 * w, w) + cbam(w)                              # 64 -> 128       118,976 + 680
        + 2 * w                                                       # out BatchNorm        128
        + conv(3, w, 3)                                               # out conv           1,731
    )
    assert expected == 31_859_379
    cfg = default_model_config()
    module = build_generator(cfg)
    variables = jax.eval_shape(lambda r: init_variables(module, r, (1, cfg.z_dim)), jax.random.key(0))
    assert count_params(variables) == expected
    assert count_params(variables["params"]) == expected


def _config(**overrides):
    return ml_collections.ConfigDict({**default_model_config().to_dict(), **overrides})


def test_build_validates_config_fields():
    cfg = default_model_config()
    assert (cfg.image_size, cfg.channels, cfg.z_dim, cfg.width, cfg.cbam_reduction) == (128, 3, 100, 64, 16)
    # The original's networks: residual U-Net discriminator with CBAM, BigGAN-style spectral norm.
    assert (cfg.spatial_norm, cfg.generator_output, cfg.d_block, cfg.d_attention, cfg.e_attention,
            cfg.spectral_norm) == ("batch", "relu_tanh", "residual", "cbam", "none", "biggan")
    bad_values = {"image_size": 100, "channels": 0, "z_dim": -1, "width": 2.5, "cbam_reduction": 0,
                  "spatial_norm": "layer", "generator_output": "sigmoid", "spectral_norm": "flax"}
    for field, value in bad_values.items():
        cfg = _config(**{field: value})
        with pytest.raises(ValueError, match=f"config.model.{field}"):
            build_generator(cfg)
    for field, value, build in (("d_block", "dense", build_discriminator), ("d_attention", "sa", build_discriminator),
                                ("e_attention", True, build_encoder), ("image_size", 72, build_discriminator),
                                ("image_size", 48, build_encoder)):
        cfg = _config(**{field: value})
        with pytest.raises(ValueError, match=f"config.model.{field}"):
            build(cfg)
    cfg = default_model_config()
    del cfg["width"]
    with pytest.raises(ValueError, match="config.model.width"):
        build_generator(cfg)


def test_parameter_summary_and_describe(tiny):
    _, variables, _ = tiny
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables["params"]))
    assert count_params(variables) == n_params
    text = parameter_summary(variables)
    assert "[params]" in text and "[spectral]" in text and "[batch_stats]" in text
    assert "proj_z/kernel" in text and "block1/conv1/u" in text
    assert f"Trainable parameters: {n_params:,}" in text
    full = describe(default_model_config())
    # The original's classes count the same: G 31,859,379 (third CBAM at its block's width),
    # D residual + CBAM 33,301,106, E 41,069,028.
    for name, total in (("Generator", 31_859_379), ("Discriminator", 33_301_106), ("Encoder", 41_069_028)):
        assert f"== {name} ==" in full
        assert f"Trainable parameters: {total:,}" in full
