"""Spectral-normalised layers (PyTorch spectral_norm semantics) and the parameter-free helpers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funetgan_jax.layers import SNConv, SNDense, convert_spectral_state, instance_norm, pool_2x2, upsample_nearest

# Tiny models: XLA's optimisation passes and fusion emitters cost more compile time than they save.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                   "xla_cpu_use_fusion_emitters": False})


def random_variables(abstract, seed=0):
    """numpy values for a variable tree of shapes (`jax.eval_shape` of `init`).

    Model-level tests use this instead of `init`: the jitted init of the tiny discriminator
    compiles one PRNG program per variable (~20 s of XLA:CPU time), while these values
    follow the same conventions (kernels U(+-1/sqrt(fan_in)), BatchNorm scale 1, bias 0,
    running mean 0, var 1, unit-norm u and v). The initialisers themselves are tested here.
    """
    rng = np.random.default_rng(seed)

    def fill(node, collection):
        out = {}
        for name, leaf in node.items():
            if isinstance(leaf, dict):
                out[name] = fill(leaf, collection)
                continue
            shape = leaf.shape
            if collection == "spectral":
                value = _normalize(rng.normal(size=shape))
            elif collection == "batch_stats":
                value = np.zeros(shape) if name == "mean" else np.ones(shape)
            elif "scale" in node:  # BatchNorm affine parameters
                value = np.ones(shape) if name == "scale" else np.zeros(shape)
            elif name == "kernel":
                bound = 1 / np.sqrt(np.prod(shape[:-1]))
                value = rng.uniform(-bound, bound, size=shape)
            else:
                value = rng.uniform(-0.1, 0.1, size=shape)
            out[name] = np.asarray(value, np.float32)
        return out

    return {collection: fill(tree, collection) for collection, tree in abstract.items()}


def _normalize(x):
    return x / max(np.linalg.norm(x), 1e-12)


def _train(layer):
    return jit(lambda v, x: layer.apply(v, x, train=True, mutable=["spectral"]))


def _eval(layer):
    return jit(lambda v, x: layer.apply(v, x, train=False, mutable=["spectral"]))


@pytest.fixture(scope="module")
def dense():
    layer = SNDense(7)
    x = jax.random.normal(jax.random.key(1), (5, 10))
    return layer, layer.init(jax.random.key(0), x, train=False), np.asarray(x)


@pytest.fixture(scope="module")
def conv():
    layer = SNConv(6, 3, padding=0, use_bias=False)
    # The 36 one-hot 3x3x4 images: a 3x3 valid conv maps each to one row of the kernel matrix.
    probes = np.eye(36, dtype=np.float32).reshape(36, 3, 3, 4)
    return layer, layer.init(jax.random.key(0), probes, train=False), probes


def test_init_shapes_and_ranges(dense, conv):
    layer, variables, _ = dense
    p, s = variables["params"], variables["spectral"]
    assert p["kernel"].shape == (10, 7) and p["bias"].shape == (7,)
    assert s["u"].shape == (7,) and s["v"].shape == (10,)
    assert np.all(np.abs(p["kernel"]) <= 1 / np.sqrt(10)) and np.all(np.abs(p["bias"]) <= 1 / np.sqrt(10))
    _, variables, _ = conv
    assert variables["params"]["kernel"].shape == (3, 3, 4, 6) and "bias" not in variables["params"]
    u, v = variables["spectral"]["u"], variables["spectral"]["v"]
    assert u.shape == (6,) and v.shape == (36,)
    np.testing.assert_allclose([np.linalg.norm(u), np.linalg.norm(v)], [1.0, 1.0], rtol=1e-5)
    assert np.all(np.abs(variables["params"]["kernel"]) <= 1 / 6)


def test_one_training_step_is_one_power_iteration(dense):
    layer, variables, x = dense
    k, b = np.asarray(variables["params"]["kernel"]), np.asarray(variables["params"]["bias"])
    u0 = np.asarray(variables["spectral"]["u"])
    y, new = _train(layer)(variables, x)
    # W = k^T (PyTorch layout): v = normalize(W^T u), u = normalize(W v), sigma = u^T W v.
    v1 = _normalize(k @ u0)
    u1 = _normalize(k.T @ v1)
    np.testing.assert_allclose(new["spectral"]["v"], v1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["spectral"]["u"], u1, rtol=1e-5, atol=1e-6)
    sigma = u1 @ k.T @ v1
    np.testing.assert_allclose(y, x @ (k / sigma) + b, rtol=1e-5, atol=1e-5)


def test_eval_uses_stored_vectors_and_changes_nothing(dense):
    layer, variables, x = dense
    k, b = np.asarray(variables["params"]["kernel"]), np.asarray(variables["params"]["bias"])
    rng = np.random.default_rng(0)
    u, v = _normalize(rng.normal(size=7)), _normalize(rng.normal(size=10))
    variables = {"params": variables["params"], "spectral": {"u": jnp.asarray(u), "v": jnp.asarray(v)}}
    y1, state = _eval(layer)(variables, x)
    y2, _ = _eval(layer)(variables, x)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(state["spectral"]["u"], u.astype(np.float32))
    np.testing.assert_array_equal(state["spectral"]["v"], v.astype(np.float32))
    sigma = u @ k.T @ v  # no iteration in eval: sigma comes from the stored pair as it is
    np.testing.assert_allclose(y1, x @ (k / sigma) + b, rtol=1e-4, atol=1e-5)


def test_biggan_mode_iterates_in_every_forward_and_stores_only_in_training():
    """The original f-UNetGAN's SNLinear: u (out,) and sigma (1,) stored; eval runs the same
    one-step power iteration as training but keeps the stored state."""
    layer = SNDense(7, sn_mode="biggan")
    x = np.asarray(jax.random.normal(jax.random.key(1), (5, 10)))
    variables = layer.init(jax.random.key(0), x, train=False)
    assert set(variables["spectral"]) == {"u", "sigma"} and variables["spectral"]["sigma"].shape == (1,)
    k, b = np.asarray(variables["params"]["kernel"]), np.asarray(variables["params"]["bias"])
    u0 = np.asarray(variables["spectral"]["u"])
    v1 = _normalize(k @ u0)
    u1 = _normalize(k.T @ v1)
    sigma = u1 @ k.T @ v1
    y_eval, kept = _eval(layer)(variables, x)
    np.testing.assert_allclose(y_eval, x @ (k / sigma) + b, rtol=1e-5, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, kept["spectral"], variables["spectral"])
    y_train, new = _train(layer)(variables, x)
    np.testing.assert_allclose(y_train, y_eval, rtol=1e-6, atol=1e-6)  # same arithmetic, separately compiled
    np.testing.assert_allclose(new["spectral"]["u"], u1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["spectral"]["sigma"], [sigma], rtol=1e-5)


def test_spectral_state_converts_between_modes(conv):
    """biggan -> torch: the torch eval forward divides by exactly the biggan eval sigma (one
    iteration from u stored as (u', v)); torch -> biggan: sigma = u^T W v, u kept."""
    layer, torch_vars, probes = conv
    big = SNConv(6, 3, padding=0, use_bias=False, sn_mode="biggan")
    big_vars = big.init(jax.random.key(0), probes, train=False)
    as_torch = convert_spectral_state(big_vars, torch_vars)
    assert set(as_torch["spectral"]) == {"u", "v"}
    np.testing.assert_allclose(_eval(layer)(as_torch, probes)[0], _eval(big)(big_vars, probes)[0], rtol=1e-6, atol=1e-7)
    as_big = convert_spectral_state(torch_vars, big_vars)
    k = np.asarray(torch_vars["params"]["kernel"]).reshape(-1, 6)
    u, v = np.asarray(torch_vars["spectral"]["u"]), np.asarray(torch_vars["spectral"]["v"])
    np.testing.assert_array_equal(as_big["spectral"]["u"], u)
    np.testing.assert_allclose(as_big["spectral"]["sigma"], [u @ k.T @ v], rtol=1e-6)
    assert convert_spectral_state(torch_vars, torch_vars)["spectral"] == torch_vars["spectral"]


def test_training_gradient_treats_u_v_as_constants(dense):
    layer, variables, x = dense
    _, new = _train(layer)(variables, x)
    u1, v1 = new["spectral"]["u"], new["spectral"]["v"]

    def loss(kernel):
        params = {"kernel": kernel, "bias": variables["params"]["bias"]}
        y, _ = layer.apply({"params": params, "spectral": variables["spectral"]}, x, train=True,
                           mutable=["spectral"])
        return jnp.sum(jnp.sin(y))

    def by_hand(kernel):
        return jnp.sum(jnp.sin(x @ (kernel / (u1 @ kernel.T @ v1)) + variables["params"]["bias"]))

    k = variables["params"]["kernel"]
    np.testing.assert_allclose(jax.grad(loss)(k), jax.grad(by_hand)(k), rtol=1e-4, atol=1e-5)


def test_training_needs_mutable_spectral(dense):
    layer, variables, x = dense
    with pytest.raises(ValueError, match="mutable"):
        layer.apply(variables, x, train=True)


@pytest.mark.parametrize("which", ["dense", "conv"])
def test_power_iteration_converges_to_unit_spectral_norm(which, dense, conv):
    layer, variables, x = dense if which == "dense" else conv
    step = _train(layer)
    for _ in range(100):
        _, state = step(variables, x)
        variables = {**variables, **state}
    y, _ = _eval(layer)(variables, x)
    if which == "conv":
        # One-hot probe i gives row i of the normalised kernel matrix (kh*kw*in, out).
        matrix = np.asarray(y).reshape(36, 6)
        kernel = np.asarray(variables["params"]["kernel"])
        sigma = np.linalg.svd(kernel.reshape(36, 6), compute_uv=False)[0]
        np.testing.assert_allclose(matrix, kernel.reshape(36, 6) / sigma, rtol=1e-3, atol=1e-5)
    else:
        matrix = np.asarray(layer.apply(variables, np.eye(10, dtype=np.float32), train=False)
                            - variables["params"]["bias"])
    assert abs(np.linalg.svd(matrix, compute_uv=False)[0] - 1.0) < 1e-3


@pytest.mark.parity
def test_conv_matches_torch_spectral_norm(conv):
    torch = pytest.importorskip("torch")
    layer, variables, _ = conv
    x = np.random.default_rng(1).normal(size=(2, 7, 7, 4)).astype(np.float32)
    k = np.asarray(variables["params"]["kernel"])  # (kh, kw, in, out)
    u, v = np.asarray(variables["spectral"]["u"]), np.asarray(variables["spectral"]["v"])
    ref = torch.nn.utils.spectral_norm(torch.nn.Conv2d(4, 6, 3, bias=False))
    with torch.no_grad():
        ref.weight_orig.copy_(torch.from_numpy(k.transpose(3, 2, 0, 1).copy()))
        ref.weight_u.copy_(torch.from_numpy(u.copy()))
        # Our v is in HWIO-flatten order (kh, kw, in); PyTorch's in (in, kh, kw) order.
        ref.weight_v.copy_(torch.from_numpy(v.reshape(3, 3, 4).transpose(2, 0, 1).reshape(-1).copy()))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    for train in (True, False):
        ref.train(train)
        with torch.no_grad():
            want = ref(xt).numpy().transpose(0, 2, 3, 1)
        got, state = layer.apply(variables, x, train=train, mutable=["spectral"])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state["spectral"]["u"], ref.weight_u.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state["spectral"]["v"].reshape(3, 3, 4).transpose(2, 0, 1).reshape(-1),
                                   ref.weight_v.numpy(), rtol=1e-5, atol=1e-6)
        variables = {**variables, **state}


def test_instance_norm_upsample_pool():
    x = np.random.default_rng(2).normal(2.0, 3.0, size=(2, 4, 6, 3)).astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)  # biased, like torch InstanceNorm2d
    np.testing.assert_allclose(instance_norm(x), (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    up = np.asarray(upsample_nearest(x))
    assert up.shape == (2, 8, 12, 3)
    for di in (0, 1):
        for dj in (0, 1):
            np.testing.assert_array_equal(up[:, di::2, dj::2], x)
    blocks = x.reshape(2, 2, 2, 3, 2, 3)
    np.testing.assert_allclose(pool_2x2(x, "max"), blocks.max(axis=(2, 4)), rtol=1e-6)
    np.testing.assert_allclose(pool_2x2(x, "avg"), blocks.mean(axis=(2, 4)), rtol=1e-5)
    with pytest.raises(ValueError, match="pool"):
        pool_2x2(x, "median")
