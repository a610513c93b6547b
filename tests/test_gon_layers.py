"""GON layers (gon_jax/layers.py): PyTorch ConvTranspose numerics, the conv decoders' parameter
counts, presets, build (BatchNorm: tests/test_torch_layers.py).

JAX's default threefry RNG takes seconds to compile per shape on a small CPU, so tests
fill variables with numpy (`numpy_variables`, also used by the other GON test modules)
and use an 'rbg' key where the initializers themselves are under test.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gon_jax import build
from gon_jax.layers import (ConvDecoder, decoder_output_size, mnist_conv_gon, mnist_stages, mvtec_conv_gon,
                            torch_conv_transpose, vae32_stages)


def numpy_variables(model, *inputs, seed: int = 0, **kwargs):
    """Variables of model.init(key, *inputs) with values drawn by numpy: kernels and biases
    U(+-1/sqrt(fan_in)) (fan_in = product of the kernel's leading dims), BatchNorm scale 1,
    bias 0, running mean 0, variance 1."""
    shapes = jax.eval_shape(functools.partial(model.init, jax.random.key(0), **kwargs), *inputs)
    rng = np.random.default_rng(seed)

    def fill(collection: str, module: dict) -> dict:
        out = {}
        for name, leaf in module.items():
            if isinstance(leaf, dict):
                out[name] = fill(collection, leaf)
            elif collection == "batch_stats" or "scale" in module:
                one = name in ("var", "scale")
                out[name] = jnp.full(leaf.shape, 1.0 if one else 0.0, leaf.dtype)
            else:
                fan_in = int(np.prod(module["kernel"].shape[:-1]))
                out[name] = jnp.asarray(rng.uniform(-1, 1, leaf.shape) / np.sqrt(fan_in), leaf.dtype)
        return out

    return {collection: fill(collection, tree) for collection, tree in shapes.items()}


def n_params(variables) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("k,s,p,op", [(4, 1, 0, 0), (4, 2, 1, 0), (3, 2, 1, 0), (3, 2, 1, 1), (5, 3, 2, 2),
                                     # the sub-pixel form's edge cases: k < s, k = s, p = k - 1
                                     (1, 2, 0, 1), (2, 2, 0, 0), (4, 2, 3, 1), (3, 3, 0, 2), (2, 3, 1, 2)])
@pytest.mark.parametrize("hw", [(5, 6), (1, 1)])  # H != W catches axis swaps; 1x1: the one-matmul path
def test_conv_transpose_equals_torch(k, s, p, op, hw):
    if hw == (1, 1) and k - 2 * p + op < 1:
        pytest.skip("no output from a 1x1 input")
    rng = np.random.default_rng(k * 100 + s * 10 + p + op)
    x = rng.normal(size=(2, 3, *hw)).astype(np.float32)  # NCHW
    w = rng.normal(size=(3, 4, k, k)).astype(np.float32)  # PyTorch (in, out, kh, kw)
    b = rng.normal(size=(4,)).astype(np.float32)
    want = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                                stride=s, padding=p, output_padding=op)
    assert want.shape[2:] == ((hw[0] - 1) * s - 2 * p + k + op, (hw[1] - 1) * s - 2 * p + k + op)
    layer = torch_conv_transpose(4, k, s, p, op)
    variables = {"params": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)), "bias": jnp.asarray(b)}}
    got = layer.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(got), to_nhwc(want), rtol=1e-5, atol=1e-5)


def test_conv_transpose_init_is_torch_default():
    # fan_in = out * k * k = 8 * 16 = 128 (torch ConvTranspose2d), bound 1/sqrt(128) = 0.0884.
    variables = torch_conv_transpose(8, 4, 2, 1).init(jax.random.key(0, impl="rbg"), jnp.zeros((1, 2, 2, 300)))
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
    assert kernel.shape == (4, 4, 8, 300)
    bound = 1 / np.sqrt(128)
    assert 0.95 * bound < float(jnp.max(jnp.abs(kernel))) <= bound
    assert float(jnp.max(jnp.abs(bias))) <= bound


def test_conv_transpose_rejects_bad_padding():
    with pytest.raises(ValueError, match="padding"):
        torch_conv_transpose(4, 3, 2, 3)
    with pytest.raises(ValueError, match="output_padding"):
        torch_conv_transpose(4, 3, 2, 1, 2)


def test_mvtec_parameter_count():
    # ConvT(100->992, k4): 100*992*16 + 992 = 1,588,192;  BN 2*992 = 1,984
    # ConvT(992->496, k4): 992*496*16 + 496 = 7,873,008;  BN 2*496 =   992
    # ConvT(496->248, k4): 496*248*16 + 248 = 1,968,376;  BN 2*248 =   496
    # ConvT(248->124, k4): 248*124*16 + 124 =   492,156;  BN 2*124 =   248
    # ConvT(124->3,   k4): 124*3*16   + 3   =     5,955
    expected = 1_588_192 + 1_984 + 7_873_008 + 992 + 1_968_376 + 496 + 492_156 + 248 + 5_955
    assert expected == 11_931_407
    model = mvtec_conv_gon()
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 100)))
    assert n_params(variables) == expected
    out = jax.eval_shape(model.apply, variables, jnp.zeros((2, 100)))
    assert out.shape == (2, 64, 64, 3)


def test_mnist_parameter_count():
    # ConvT(100->256, k4): 100*256*16 + 256 = 409,856;  BN 512
    # ConvT(256->128, k3): 256*128*9  + 128 = 295,040;  BN 256
    # ConvT(128->64,  k4): 128*64*16  + 64  = 131,136;  BN 128
    # ConvT(64->1,    k4): 64*1*16    + 1   =   1,025
    expected = 409_856 + 512 + 295_040 + 256 + 131_136 + 128 + 1_025
    assert expected == 837_953
    model = mnist_conv_gon()
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 100)))
    assert n_params(variables) == expected
    assert jax.eval_shape(model.apply, variables, jnp.zeros((2, 100))).shape == (2, 28, 28, 1)


def test_tiny_decoders_shapes_and_ranges():
    z = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)
    for model, shape in [(mvtec_conv_gon(5, 2), (3, 64, 64, 3)), (mnist_conv_gon(5, 2), (3, 28, 28, 1)),
                         (ConvDecoder(5, vae32_stages(2, 2), "relu", "sigmoid"), (3, 32, 32, 2))]:
        variables = jax.eval_shape(model.init, jax.random.key(0), z)
        assert jax.eval_shape(model.apply, variables, z).shape == shape
    model = mnist_conv_gon(5, 2)  # (sigmoid outputs: tests/test_gon_variational.py)
    y, _ = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(numpy_variables(model, z), z)
    assert -1.0 <= float(y.min()) and float(y.max()) <= 1.0 and float(jnp.std(y)) > 1e-3
    assert decoder_output_size(mnist_stages()) == 28 and decoder_output_size(vae32_stages()) == 32


def test_decoder_equals_torch_sequential():
    # A tiny MNIST-layout decoder against the notebook's nn.Sequential with the same weights.
    nz, ngf = 3, 2
    stages = mnist_stages(ngf, 1)
    layers, width = [], nz
    for i, (out, k, s, p) in enumerate(stages):
        layers.append(torch.nn.ConvTranspose2d(width, out, k, s, p, bias=True))
        if i < len(stages) - 1:
            layers += [torch.nn.BatchNorm2d(out), torch.nn.ELU()]
        width = out
    ref = torch.nn.Sequential(*layers, torch.nn.Tanh())
    params, stats = {}, {}
    for i in range(len(stages)):
        conv = ref[3 * i]
        params[f"convt{i}"] = {"kernel": jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0)),
                               "bias": jnp.asarray(conv.bias.detach().numpy())}
        if i < len(stages) - 1:
            bn = ref[3 * i + 1]
            with torch.no_grad():
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
            params[f"bn{i}"] = {"scale": jnp.asarray(bn.weight.detach().numpy()),
                                "bias": jnp.asarray(bn.bias.detach().numpy())}
            stats[f"bn{i}"] = {"mean": jnp.zeros(bn.num_features), "var": jnp.ones(bn.num_features)}
    model = ConvDecoder(nz, stages)
    z = np.random.default_rng(0).normal(size=(4, nz)).astype(np.float32)

    @jax.jit
    def train_then_eval(variables, z):
        y_train, upd = model.apply(variables, z, train=True, mutable=["batch_stats"])
        return y_train, upd["batch_stats"], model.apply({**variables, **upd}, z, train=False)

    got_train, stats, got_eval = train_then_eval({"params": params, "batch_stats": stats}, jnp.asarray(z))
    want = ref.train()(torch.from_numpy(z)[:, :, None, None])
    np.testing.assert_allclose(np.asarray(got_train), to_nhwc(want), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["bn1"]["var"], ref[4].running_var.numpy(), rtol=1e-5)
    want = ref.eval()(torch.from_numpy(z)[:, :, None, None])
    np.testing.assert_allclose(np.asarray(got_eval), to_nhwc(want), rtol=1e-4, atol=1e-5)


def test_decoder_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="config.model.activation"):
        ConvDecoder(4, mnist_stages(2), activation="gelu")
    with pytest.raises(ValueError, match="config.model.stages"):
        ConvDecoder(4, ((8, 4, 1),))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        model = ConvDecoder(4, mnist_stages(2))
        model.init(jax.random.key(0), jnp.zeros((2, 5)))


@pytest.mark.parametrize("kind,preset,expected", [
    ("conv_gon", "mvtec", 11_931_407), ("conv_gon", "mnist", 837_953), ("implicit_gon", "mnist", 206_593),
    # Variational 32x32: heads 2*(48*48+48) = 4,704; ConvT 48*128*16+128 = 98,432; BN 256;
    # ConvT 128*64*16+64 = 131,136; BN 128; ConvT 64*32*16+32 = 32,800; BN 64; ConvT 32*16+1 = 513
    ("variational_gon", "vae32", 4_704 + 98_432 + 256 + 131_136 + 128 + 32_800 + 64 + 513),
    # CAE: 3*32*9+32 = 896; 32*64*9+64 = 18,496; ConvT 64*32*9+32 = 18,464; ConvT 32*3*9+3 = 867
    ("cae", "mvtec", 896 + 18_496 + 18_464 + 867),
])
def test_build_and_describe_count(kind, preset, expected):
    cfg = build.default_gon_model_config(kind, preset)
    text = build.describe(cfg)
    assert f"Trainable parameters: {expected:,}" in text


def test_build_errors_name_config_fields():
    cfg = build.default_gon_model_config("conv_gon", "mnist")
    cfg.image_size = 32
    with pytest.raises(ValueError, match="config.model.image_size"):
        build.build_gon_model(cfg)
    cfg = build.default_gon_model_config("conv_gon", "mnist")
    cfg.kind = "gan"
    with pytest.raises(ValueError, match="config.model.kind"):
        build.build_gon_model(cfg)
    cfg = build.default_gon_model_config("implicit_gon", "mnist")
    cfg.w0 = -1.0
    with pytest.raises(ValueError, match="config.model.w0"):
        build.build_gon_model(cfg)
    cfg = build.default_gon_model_config("variational_gon", "vae32")
    del cfg["ngf"]
    with pytest.raises(ValueError, match="config.model.ngf is missing"):
        build.build_gon_model(cfg)
    with pytest.raises(ValueError, match="kind/preset"):
        build.default_gon_model_config("cae", "vae32")
