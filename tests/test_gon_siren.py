"""Implicit GON (SIREN): coordinates, forward pass against numpy, initialisation, parameter count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_gon_layers import n_params, numpy_variables

from gon_jax.siren import ImplicitGON, pixel_coordinates


def test_parameter_count_28x28x1():
    # [34 -> 256 -> 256 -> 256 -> 256 -> 1], kernel + bias per layer:
    #   34*256 + 256  =   8,960
    #   256*256 + 256 =  65,792  (three times: 197,376)
    #   256*1 + 1     =     257
    expected = 8_960 + 3 * 65_792 + 257
    assert expected == 206_593
    model = ImplicitGON(nz=32, image_size=28, channels=1)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 32)))
    assert n_params(variables) == expected
    assert jax.eval_shape(model.apply, variables, jnp.zeros((2, 32))).shape == (2, 28, 28, 1)


def test_pixel_coordinates_row_major_ij():
    c = np.asarray(pixel_coordinates(3, 4))
    assert c.shape == (12, 2)
    # row h*W + w holds (linspace(-1,1,3)[h], linspace(-1,1,4)[w])
    np.testing.assert_allclose(c[0], [-1.0, -1.0])
    np.testing.assert_allclose(c[1], [-1.0, -1.0 / 3.0], rtol=1e-6)
    np.testing.assert_allclose(c[4 * 1 + 3], [0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(c[4 * 2 + 2], [1.0, 1.0 / 3.0], rtol=1e-6)


def test_forward_equals_numpy_siren():
    model = ImplicitGON(nz=3, image_size=4, channels=2, hidden=(5, 6), w0=30.0)
    z = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    variables = numpy_variables(model, jnp.asarray(z))
    got = np.asarray(model.apply(variables, jnp.asarray(z)))
    assert got.shape == (2, 4, 4, 2)
    p = variables["params"]
    lin = np.linspace(-1, 1, 4)
    want = np.zeros((2, 4, 4, 2))
    for b in range(2):
        for h in range(4):
            for w in range(4):
                a = np.concatenate([[lin[h], lin[w]], z[b]])  # input [c, z]
                a = np.sin(30.0 * (a @ p["layer0"]["kernel"] + p["layer0"]["bias"]))
                a = np.sin(30.0 * (a @ p["layer1"]["kernel"] + p["layer1"]["bias"]))
                want[b, h, w] = a @ p["layer2"]["kernel"] + p["layer2"]["bias"]  # last layer linear
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_initialisation_bounds():
    model = ImplicitGON(nz=30, image_size=2, channels=1, hidden=(64, 64), w0=30.0)
    p = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 30)))["params"]
    bounds = {"layer0": 1.0 / 32, "layer1": np.sqrt(6.0 / 64) / 30, "layer2": np.sqrt(6.0 / 64) / 30}
    bias_bounds = {"layer0": 1 / np.sqrt(32), "layer1": 1 / np.sqrt(64), "layer2": 1 / np.sqrt(64)}
    for name, bound in bounds.items():
        k = np.abs(np.asarray(p[name]["kernel"]))
        assert 0.9 * bound < k.max() <= bound, name  # the bound is reached, never exceeded
        b = np.abs(np.asarray(p[name]["bias"]))
        assert b.max() <= bias_bounds[name] and (name == "layer2" or b.max() > 0.8 * bias_bounds[name]), name


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="config.model.hidden"):
        ImplicitGON(hidden=())
    with pytest.raises(ValueError, match="config.model.image_size"):
        ImplicitGON(image_size=0)
    with pytest.raises(ValueError, match=r"\(B, 32\)"):
        ImplicitGON().init(jax.random.key(0), jnp.zeros((1, 4)))
