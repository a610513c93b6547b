"""The GON step: inner gradient, second-order outer gradient, latent scaling, BatchNorm updates, training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_gon_layers import numpy_variables

from gon_jax.cae import ConvAutoencoder
from gon_jax.layers import ConvDecoder
from gon_jax.losses import gon_loss, mse_sum_channels, siren_sum_pixels
from gon_jax.origin import default_loss_kind, gon_loss_and_updates, gon_value_and_grad, origin_latent
from gon_jax.siren import ImplicitGON

NZ = 3
CONV = ConvDecoder(NZ, ((4, 4, 1, 0), (2, 4, 2, 1)))  # z -> 4x4x4 -> BN, ELU -> 8x8x2, tanh
# Compiled once, shared by the tests (compilation dominates their run time on CPU).
FULL_STEP = jax.jit(functools.partial(gon_value_and_grad, model=CONV))


def conv_setup(dtype=jnp.float32):
    variables = numpy_variables(CONV, jnp.zeros((2, NZ)), seed=1)
    # A nonzero BatchNorm shift: with 0 the ELU input at z0 sits exactly on ELU's kink (its
    # second derivative jumps), which would make finite differences converge only linearly.
    variables["params"]["bn0"]["bias"] = jnp.array([0.3, -0.2, 0.1, -0.4])
    variables = jax.tree.map(lambda a: a.astype(dtype), variables)
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (3, 8, 8, 2)), dtype)
    return variables, x


def test_losses_by_hand():
    recon = jnp.arange(12.0).reshape(2, 3, 1, 2) / 12  # (B=2, H=3, W=1, C=2)
    x = jnp.zeros((2, 3, 1, 2))
    total = float(np.sum(np.square(np.arange(12.0) / 12)))
    # conv GON: sum over channels, mean over the 6 (b, h, w) positions
    np.testing.assert_allclose(mse_sum_channels(recon, x), total / 6, rtol=1e-6)
    # implicit GON: sum over the 3 pixels, mean over the 4 (b, c) pairs
    np.testing.assert_allclose(siren_sum_pixels(recon, x), total / 4, rtol=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        gon_loss("vae_bce_kl", recon, x)
    with pytest.raises(ValueError, match="loss_kind"):
        gon_loss("l1", recon, x)


def test_inner_gradient_equals_finite_differences():
    with jax.enable_x64(True):
        variables, x = conv_setup(jnp.float64)

        @jax.jit
        def inner_loss(z):  # BatchNorm in training mode, as in the GON step
            out = CONV.apply(variables, z, train=True, mutable=["batch_stats"])[0]
            return mse_sum_channels(out, x)

        decode = lambda z: CONV.apply(variables, z, train=True, mutable=["batch_stats"])[0]  # noqa: E731
        z = jax.jit(lambda x: origin_latent(decode, x, NZ))(x)
        h = 1e-6
        fd = np.zeros((3, NZ))
        for i in range(3):
            for j in range(NZ):
                e = jnp.zeros((3, NZ)).at[i, j].set(h)
                fd[i, j] = (inner_loss(e) - inner_loss(-e)) / (2 * h)
        assert np.abs(fd).max() > 1e-3  # a gradient worth comparing
        np.testing.assert_allclose(np.asarray(z), -fd, rtol=1e-6, atol=1e-10)


def test_outer_gradient_is_second_order():
    with jax.enable_x64(True):
        variables, x = conv_setup(jnp.float64)
        cut = jax.jit(functools.partial(gon_value_and_grad, model=CONV, stop_gradient_through_latent=True))
        (loss, (_, z, _)), grads = FULL_STEP(variables, x)
        (loss_cut, _), grads_cut = cut(variables, x)
        assert float(loss) == pytest.approx(float(loss_cut), rel=1e-12)

        # The full gradient is the derivative of the GON loss (z recomputed from the parameters):
        direction = jax.tree.map(lambda p: jnp.asarray(np.random.default_rng(p.size).normal(size=p.shape)),
                                 variables["params"])
        loss_at = jax.jit(lambda t: gon_loss_and_updates(
            {**variables, "params": jax.tree.map(lambda p, d: p + t * d, variables["params"], direction)},
            x, model=CONV)[0])
        h = 1e-6
        fd = (loss_at(h) - loss_at(-h)) / (2 * h)

        def dot(g):
            return sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))

        assert dot(grads) == pytest.approx(float(fd), rel=1e-5)
        assert abs(dot(grads_cut) - float(fd)) > 1e-3 * abs(float(fd))  # dropping the path is visibly wrong

        # ... and the stop-gradient one is the gradient of the outer loss with z a constant.
        def outer(params):
            out = CONV.apply({**variables, "params": params}, z, train=True, mutable=["batch_stats"])[0]
            return mse_sum_channels(out, x)

        want = jax.jit(jax.grad(outer))(variables["params"])
        for a, b in zip(jax.tree.leaves(grads_cut), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_running_statistics_updated_by_inner_then_outer_pass():
    with jax.enable_x64(True):
        variables, x = conv_setup(jnp.float64)
        (_, (stats, z, recon)), _ = FULL_STEP(variables, x)
    assert recon.shape == x.shape and z.shape == (3, NZ)
    bias = np.asarray(variables["params"]["convt0"]["bias"])
    # Inner pass at z0 = 0: every position of the first layer holds its bias -> mean bias, var 0.
    mean1, var1 = 0.9 * 0.0 + 0.1 * bias, 0.9 * 1.0 + 0.1 * 0.0
    # Outer pass at z: first-layer activations, unbiased variance over n = 3 * 4 * 4 positions.
    # (PyTorch: out[o, i, j] = sum_c z[c] W[c, o, i, j] for a 1x1 input; kernel[i, j, o, c] = W[c, o, i, j])
    convt0 = variables["params"]["convt0"]
    h = np.einsum("bc,ijoc->bijo", np.asarray(z), np.asarray(convt0["kernel"])) + np.asarray(convt0["bias"])
    mean2 = 0.9 * mean1 + 0.1 * h.mean((0, 1, 2))
    var2 = 0.9 * var1 + 0.1 * h.var((0, 1, 2), ddof=1)
    np.testing.assert_allclose(stats["bn0"]["mean"], mean2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats["bn0"]["var"], var2, rtol=1e-10)
    # Eval: running statistics, nothing updated.
    _, (same, _, _) = jax.jit(functools.partial(gon_loss_and_updates, model=CONV, train=False))(
        *conv_setup())
    np.testing.assert_array_equal(same["bn0"]["var"], variables["batch_stats"]["bn0"]["var"])


def test_per_sample_scaling_equals_batch_mean_without_batchnorm():
    siren = ImplicitGON(nz=NZ, image_size=4, channels=1, hidden=(8, 8), w0=1.0)  # w0 1: well-conditioned in float32
    variables = numpy_variables(siren, jnp.zeros((1, NZ)), seed=3)
    x = jnp.asarray(np.random.default_rng(4).uniform(0, 1, (3, 4, 4, 1)), jnp.float32)

    @jax.jit
    def latents(x):
        decode = lambda z: siren.apply(variables, z)  # noqa: E731
        latent = functools.partial(origin_latent, decode, nz=NZ, loss_kind="siren_sum_pixels")
        return (latent(x), latent(x, latent_scaling="per_sample"), latent(x, latent_batch_size=7),
                latent(x[:1], latent_scaling="per_sample", latent_batch_size=3))

    batch, single, batch7, first = latents(x)
    assert float(jnp.abs(batch).max()) > 1e-3
    np.testing.assert_allclose(single, batch, rtol=1e-5, atol=1e-7)
    # An explicit batch size fixes the scale: z * B / latent_batch_size, whatever the batch.
    np.testing.assert_allclose(batch7, batch * 3 / 7, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(first, batch[:1], rtol=1e-5, atol=1e-7)
    losses = jax.jit(lambda v, x: [gon_loss_and_updates(v, x, model=siren, latent_scaling=m)[0]
                                   for m in ("batch_mean", "per_sample")])(variables, x)
    assert float(losses[1]) == pytest.approx(float(losses[0]), rel=1e-5)


def test_per_sample_scaling_with_batchnorm():
    variables, x = conv_setup()

    @jax.jit
    def latents(x):
        decode_train = lambda z: CONV.apply(variables, z, train=True, mutable=["batch_stats"])[0]  # noqa: E731
        decode_eval = lambda z: CONV.apply(variables, z)  # noqa: E731
        return (origin_latent(decode_train, x, NZ), origin_latent(decode_train, x, NZ, latent_scaling="per_sample"),
                origin_latent(decode_eval, x, NZ), origin_latent(decode_eval, x, NZ, latent_scaling="per_sample"))

    train_b, train_s, eval_b, eval_s = latents(x)
    # Training mode couples the samples through the batch statistics: the modes differ ...
    assert float(jnp.abs(train_b - train_s).max()) > 1e-2 * float(jnp.abs(train_b).max())
    # ... running statistics do not couple them: equal.
    np.testing.assert_allclose(eval_s, eval_b, rtol=1e-5, atol=1e-7)
    # per_sample in a training step: each sample's running-statistics update, averaged.
    _, (stats, _, _) = jax.jit(functools.partial(gon_loss_and_updates, model=CONV, latent_scaling="per_sample"))(
        variables, x)
    assert jax.tree.map(jnp.shape, stats) == jax.tree.map(jnp.shape, variables["batch_stats"])


def test_short_training_decreases_loss():
    variables, _ = conv_setup()
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:8, 0:8] / 7.0
    # Eight images from a 2-parameter family (a tilted ramp per channel), in [-1, 1].
    a = rng.uniform(-1, 1, (8, 1, 1, 2))
    x = jnp.asarray(np.clip(a * (yy[None, :, :, None] - xx[None, :, :, None]) + 0.3 * a, -1, 1), jnp.float32)
    opt = optax.adam(1e-2)

    @jax.jit
    def step(variables, opt_state):
        (loss, (stats, _, _)), grads = gon_value_and_grad(variables, x, model=CONV)
        updates, opt_state = opt.update(grads, opt_state, variables["params"])
        return {"params": optax.apply_updates(variables["params"], updates), "batch_stats": stats}, opt_state, loss

    opt_state = opt.init(variables["params"])
    losses = []
    for _ in range(30):
        variables, opt_state, loss = step(variables, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.3 * losses[0]


def test_bad_options():
    variables, x = conv_setup()
    with pytest.raises(ValueError, match="latent_scaling"):
        origin_latent(lambda z: CONV.apply(variables, z), x, NZ, latent_scaling="sum")
    with pytest.raises(ValueError, match="latent_batch_size"):
        origin_latent(lambda z: CONV.apply(variables, z), x, NZ, latent_batch_size=0)
    with pytest.raises(ValueError, match="not a GON"):
        default_loss_kind(ConvAutoencoder())
    assert default_loss_kind(CONV) == "mse_sum_channels"
