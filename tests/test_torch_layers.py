"""anomaly_core/networks/torch_layers.py: BatchNorm against torch.nn.BatchNorm2d, the default
initialisers against torch's, check_choice's message.

Eager and tiny: nothing here is jitted, and the initialisers draw with an 'rbg' key
(threefry compiles for seconds per shape on a small CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from anomaly_core.networks.torch_layers import BatchNorm, check_choice, torch_bias_init, torch_kernel_init, uniform_init


def to_nhwc(t) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parity
@pytest.mark.parametrize("seed,shape,weight,bias,fresh_batch", [
    (0, (3, 4, 5, 2), [1.0, 2.0, 0.5, -1.0], [0.0, 1.0, -1.0, 0.3], True),  # NCHW, H != W
    (3, (3, 2, 5, 4), [1.5, 0.5], [0.2, -0.1], False),  # the same batch twice
])
def test_batch_norm_equals_torch_train_and_eval(seed, shape, weight, bias, fresh_batch):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    xs = [rng.normal(loc=1.0, scale=2.0, size=shape).astype(np.float32) for _ in range(2)]
    if not fresh_batch:
        xs[1] = xs[0]
    c = shape[1]
    ref = torch.nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(weight))
        ref.bias.copy_(torch.tensor(bias))
    bn = BatchNorm(momentum=0.9)  # torch momentum 0.1
    variables = bn.init(jax.random.key(0), jnp.zeros((1, 5, 2, c)), train=False)
    assert jax.tree.map(jnp.shape, variables) == {"params": {"scale": (c,), "bias": (c,)},
                                                  "batch_stats": {"mean": (c,), "var": (c,)}}
    variables = {"params": {"scale": jnp.asarray(weight), "bias": jnp.asarray(bias)},
                 "batch_stats": variables["batch_stats"]}
    for x in xs:  # two training forwards: output with batch statistics, running stats updated
        with torch.no_grad():
            want = ref.train()(torch.from_numpy(x))
        got, upd = bn.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=True, mutable=["batch_stats"])
        variables = {**variables, "batch_stats": upd["batch_stats"]}
        np.testing.assert_allclose(np.asarray(got), to_nhwc(want), rtol=1e-5, atol=1e-5)
        # running_var uses the unbiased batch variance (n/(n-1)), as in PyTorch.
        np.testing.assert_allclose(variables["batch_stats"]["mean"], ref.running_mean.numpy(), rtol=1e-6)
        np.testing.assert_allclose(variables["batch_stats"]["var"], ref.running_var.numpy(), rtol=1e-6)
    with torch.no_grad():
        want = ref.eval()(torch.from_numpy(xs[0]))
    got = bn.apply(variables, jnp.asarray(xs[0].transpose(0, 2, 3, 1)), train=False)
    np.testing.assert_allclose(np.asarray(got), to_nhwc(want), rtol=1e-5, atol=1e-5)


def test_batch_norm_identical_samples_have_zero_variance():
    # The GON origin: every sample's activations equal -> variance exactly 0, output = bias.
    x = jnp.broadcast_to(jnp.array([0.3, -1.7, 2.1]), (4, 2, 2, 3))
    bn = BatchNorm()
    variables = bn.init(jax.random.key(0), x, train=False)
    variables["params"]["bias"] = jnp.array([0.5, 0.0, -2.0])
    y, upd = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    # x - mean is only the rounding error of the float32 mean (~1e-7), amplified by 1/sqrt(eps).
    np.testing.assert_allclose(np.asarray(y), np.broadcast_to([0.5, 0.0, -2.0], (4, 2, 2, 3)), atol=2e-4)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 * np.ones(3), rtol=1e-7)  # 0.9 * 1 + 0.1 * 0
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * np.array([0.3, -1.7, 2.1]), rtol=1e-6)


def test_batch_norm_training_needs_mutable_batch_stats_and_init_keeps_them():
    x = jnp.arange(12.0).reshape(2, 2, 1, 3)
    bn = BatchNorm()
    variables = bn.init(jax.random.key(0), x, train=True)  # init does not update the statistics
    np.testing.assert_array_equal(variables["batch_stats"]["mean"], np.zeros(3))
    np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(3))
    with pytest.raises(ValueError, match=r"BatchNorm .*train=True.*mutable=\['batch_stats'\]"):
        bn.apply(variables, x, train=True)
    bn.apply(variables, x, train=False)  # eval reads them only


def test_batch_norm_statistics_in_float32_output_in_dtype():
    x = jnp.asarray(np.random.default_rng(1).normal(3.0, 2.0, size=(4, 3, 3, 2)), jnp.bfloat16)
    bn = BatchNorm()
    variables = bn.init(jax.random.key(0), x, train=False)
    y, upd = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves((variables, upd))} == {jnp.dtype(jnp.float32)}
    xf = np.asarray(x, np.float32)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * xf.mean(axis=(0, 1, 2)), rtol=1e-6)
    assert BatchNorm(dtype=jnp.float32).apply(variables, x, train=False).dtype == jnp.float32


def _flax_layout(torch_weight: np.ndarray) -> np.ndarray:
    """torch Linear (out, in) -> (in, out); Conv2d (out, in, kh, kw) -> HWIO (kh, kw, in, out);
    ConvTranspose2d (in, out, kh, kw) -> (kh, kw, out, in) (gon_jax.layers.TorchConvTranspose)."""
    return torch_weight.T if torch_weight.ndim == 2 else torch_weight.transpose(2, 3, 1, 0)


@pytest.mark.parity
@pytest.mark.parametrize("make", [
    lambda nn: nn.Conv2d(40, 8, 3),  # fan_in = in * 3 * 3 = 360
    lambda nn: nn.Linear(300, 64),  # fan_in = 300
    lambda nn: nn.ConvTranspose2d(300, 8, 4),  # fan_in = weight.size(1) * 4 * 4 = out * 16 = 128
], ids=["conv", "dense", "conv_transpose"])
def test_kernel_and_bias_init_are_torch_defaults(make):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = make(torch.nn)
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(ref.weight)
    bound = 1 / np.sqrt(fan_in)
    want = _flax_layout(ref.weight.detach().numpy())
    got = np.asarray(torch_kernel_init(jax.random.key(0, impl="rbg"), want.shape))
    assert got.shape == want.shape and got.dtype == np.float32
    for w in (got, want):  # thousands of draws: the largest is within 1% of the bound
        assert 0.99 * bound < np.abs(w).max() <= bound
    np.testing.assert_allclose(got.std(), bound / np.sqrt(3), rtol=0.03)
    assert scipy.stats.ks_2samp(got.ravel(), want.ravel()).pvalue > 1e-3
    bias = np.asarray(torch_bias_init(fan_in)(jax.random.key(1, impl="rbg"), ref.bias.shape))
    assert bias.shape == tuple(ref.bias.shape)
    assert np.abs(bias).max() <= bound and np.abs(ref.bias.detach().numpy()).max() <= bound


def test_uniform_init_bound():
    w = np.asarray(uniform_init(0.25)(jax.random.key(0, impl="rbg"), (50, 40)))
    assert w.shape == (50, 40) and 0.99 * 0.25 < np.abs(w).max() <= 0.25


def test_check_choice_names_the_setting():
    check_choice("elu", ("elu", "relu"), "config.model.activation")
    with pytest.raises(ValueError) as err:
        check_choice("gelu", ["elu", "relu"], "config.model.activation")
    assert str(err.value) == "config.model.activation must be one of ('elu', 'relu'), got 'gelu'"
