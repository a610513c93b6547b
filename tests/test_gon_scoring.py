"""GON scoring: gradient-latent errors on a model solvable by hand, F(0) scoring, BatchNorm modes."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_gon_layers import numpy_variables

from gon_jax.cae import ConvAutoencoder
from gon_jax.layers import ConvDecoder, vae32_stages
from gon_jax.origin import gon_loss_and_updates
from gon_jax.scoring import reconstruction_errors
from gon_jax.variational import VariationalGON

H, W, C, NZ = 2, 3, 2, 2


class LinearDecoder(nn.Module):
    """F(z) = z @ w + b reshaped to (B, 2, 3, 2): its gradient latent has a closed form."""

    nz: int = NZ

    @nn.compact
    def __call__(self, z, *, train=False):
        w = self.param("w", nn.initializers.zeros, (self.nz, H * W * C))
        b = self.param("b", nn.initializers.zeros, (H * W * C,))
        return (z @ w + b).reshape(-1, H, W, C)


def test_gradient_latent_on_linear_decoder_by_hand():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(NZ, H * W * C)), rng.normal(size=H * W * C)
    x = rng.uniform(0, 1, (4, H, W, C))
    variables = {"params": {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}}
    score = jax.jit(functools.partial(reconstruction_errors, model=LinearDecoder(), loss_kind="mse_sum_channels",
                                      latent_batch_size=5))
    per_image, per_pixel, recon = score(variables, jnp.asarray(x, jnp.float32))
    # Per-sample loss (1/(H*W)) ||z w + b - x||^2 has gradient (2/(H*W)) (b - x) w^T at z = 0;
    # the latent carries the training batch-mean factor 1/5.
    flat = x.reshape(4, -1)
    z = -(2.0 / (H * W)) * (b - flat) @ w.T / 5
    want = (z @ w + b).reshape(4, H, W, C)
    np.testing.assert_allclose(recon, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per_image, np.mean((want - x) ** 2, axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(per_pixel, np.mean((want - x) ** 2, axis=-1), rtol=1e-5)
    # A score does not depend on the other images in the batch.
    alone = score(variables, jnp.asarray(x[2:3], jnp.float32))[0]
    np.testing.assert_allclose(alone, per_image[2:3], rtol=1e-6)
    # Without BatchNorm a context only sets the scale: 4 context images stand for a batch of 5.
    with_context = reconstruction_errors(variables, jnp.asarray(x, jnp.float32), model=LinearDecoder(),
                                         loss_kind="mse_sum_channels", context=jnp.zeros((4, H, W, C)))[0]
    np.testing.assert_allclose(with_context, per_image, rtol=1e-6)


CONV = ConvDecoder(NZ, ((4, 4, 1, 0), (2, 4, 2, 1)))  # z -> 8x8x2


@pytest.fixture(scope="module")
def conv():
    variables = numpy_variables(CONV, jnp.zeros((1, NZ)), seed=1)
    # Running statistics away from the init values, so 'running' and 'batch' differ visibly.
    variables["batch_stats"] = jax.tree.map(lambda a: a + 0.5, variables["batch_stats"])
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.uniform(-1, 1, (3, 8, 8, 2)), jnp.float32)
    context = jnp.asarray(rng.uniform(-1, 1, (2, 8, 8, 2)), jnp.float32)
    return variables, x, context


def test_reference_zero_latent_scores_f0(conv):
    variables, x, _ = conv
    zero_latent = functools.partial(reconstruction_errors, scoring="reference_zero_latent")
    per_image, _, recon = jax.jit(functools.partial(zero_latent, model=CONV))(variables, x)
    f0 = jax.jit(CONV.apply)(variables, jnp.zeros((1, NZ)))[0]  # eval mode (running statistics), as the notebooks
    for i in range(3):
        np.testing.assert_allclose(recon[i], f0, rtol=1e-6)
    np.testing.assert_allclose(per_image, jnp.mean((f0[None] - x) ** 2, axis=(1, 2, 3)), rtol=1e-6)
    vae = VariationalGON(NZ, vae32_stages(1, 1))
    vae_vars = numpy_variables(vae, jnp.zeros((1, NZ)))
    images = jnp.zeros((2, 32, 32, 1))
    recon, f0 = jax.jit(lambda v: (zero_latent(v, images, model=vae)[2], vae.apply(v, jnp.zeros((1, NZ)))[0]))(
        vae_vars)
    np.testing.assert_allclose(recon, jnp.broadcast_to(f0, (2, 32, 32, 1)), rtol=1e-6)


def test_context_scoring_is_the_training_step_in_a_fixed_batch(conv):
    variables, x, context = conv
    score = jax.jit(functools.partial(reconstruction_errors, model=CONV, context=context))
    per_image, _, recon = score(variables, x)
    step = jax.jit(functools.partial(gon_loss_and_updates, model=CONV, train=True))
    for i in range(3):
        # The training step on the batch [x_i, context]: BatchNorm on that batch, scale 1/3.
        want = step(variables, jnp.concatenate([x[i:i + 1], context]))[1][2][0]
        np.testing.assert_allclose(recon[i], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(score(variables, x[1:2])[0], per_image[1:2], rtol=1e-6)
    with pytest.raises(ValueError, match="contradicts"):
        reconstruction_errors(variables, x, model=CONV, context=context, latent_batch_size=8)


def test_batch_and_running_statistics_modes(conv):
    variables, x, _ = conv
    @jax.jit
    def both(variables, x):
        score = functools.partial(reconstruction_errors, model=CONV, latent_batch_size=3)
        step = functools.partial(gon_loss_and_updates, model=CONV)
        return (score(variables, x, bn_statistics="batch")[2], step(variables, x, train=True)[1][2],
                score(variables, x, bn_statistics="running")[2], step(variables, x, train=False)[1][2])

    batch, want_batch, running, want_running = both(variables, x)
    np.testing.assert_allclose(batch, want_batch, rtol=1e-4, atol=1e-5)  # the training step's treatment
    np.testing.assert_allclose(running, want_running, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(batch - running).max()) > 1e-3


def test_cae_scores_its_reconstruction():
    model = ConvAutoencoder(1, (2, 2))
    x = jnp.asarray(np.random.default_rng(3).uniform(0, 1, (2, 8, 8, 1)), jnp.float32)
    variables = numpy_variables(model, x)
    (per_image, per_pixel, recon), want = jax.jit(
        lambda v, x: (reconstruction_errors(v, x, model=model), model.apply(v, x)))(variables, x)
    np.testing.assert_allclose(recon, want, rtol=1e-6)
    np.testing.assert_allclose(per_pixel, ((want - x) ** 2)[..., 0], rtol=1e-5)
    np.testing.assert_allclose(per_image, jnp.mean((want - x) ** 2, axis=(1, 2, 3)), rtol=1e-5)
    with pytest.raises(ValueError, match="CAE"):
        reconstruction_errors(variables, x, model=model, scoring="reference_zero_latent")


def test_missing_settings_are_named(conv):
    variables, x, _ = conv
    with pytest.raises(ValueError, match="context"):
        reconstruction_errors(variables, x, model=CONV)
    with pytest.raises(ValueError, match="latent_batch_size"):
        reconstruction_errors(variables, x, model=CONV, bn_statistics="running")
    with pytest.raises(ValueError, match="config.eval.scoring"):
        reconstruction_errors(variables, x, model=CONV, scoring="zero")
    with pytest.raises(ValueError, match="config.eval.bn_statistics"):
        reconstruction_errors(variables, x, model=CONV, bn_statistics="population")
