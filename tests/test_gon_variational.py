"""Variational GON: latent heads, reparameterisation, BCE + KL loss by hand and against PyTorch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from test_gon_layers import n_params, numpy_variables

from gon_jax.layers import ConvDecoder, vae32_stages
from gon_jax.losses import binary_cross_entropy, gon_loss, kl_divergence, vae_bce_kl
from gon_jax.origin import gon_loss_and_updates
from gon_jax.variational import VariationalGON, variational_gon_32


def test_parameter_count_vae32():
    # mu and logvar heads: 2 * (48*48 + 48)  = 4,704
    # ConvT(48->128, k4):  48*128*16 + 128   = 98,432;  BN 256
    # ConvT(128->64, k4):  128*64*16 + 64    = 131,136; BN 128
    # ConvT(64->32, k4):   64*32*16 + 32     = 32,800;  BN 64
    # ConvT(32->1, k4):    32*1*16 + 1       = 513
    expected = 4_704 + 98_432 + 256 + 131_136 + 128 + 32_800 + 64 + 513
    model = variational_gon_32()
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 48)))
    assert n_params(variables) == expected == 268_033
    shapes = jax.eval_shape(model.apply, variables, jnp.zeros((2, 48)))
    assert [s.shape for s in shapes] == [(2, 32, 32, 1), (2, 48), (2, 48)]


def test_bce_and_kl_by_hand():
    p = jnp.array([0.8, 0.3, 0.0, 1.0])
    x = jnp.array([1.0, 0.0, 1.0, 1.0])
    # -log 0.8, -log 0.7, log clamped at -100 (PyTorch), -log 1 = 0
    np.testing.assert_allclose(binary_cross_entropy(p, x), [0.22314355, 0.35667494, 100.0, 0.0], rtol=1e-6)
    mu = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    logvar = jnp.array([[0.0, np.log(2.0)], [0.0, 0.0]])
    # sample 0: -0.5 * [(1 + 0 - 1 - 1) + (1 + log 2 - 0 - 2)] = 1 - 0.5 log 2; sample 1: 0
    np.testing.assert_allclose(kl_divergence(mu, logvar), [1 - 0.5 * np.log(2.0), 0.0], rtol=1e-6)
    # batch of two 1x2x1 images: BCE summed over pixels, then mean over the batch
    recon = jnp.array([0.8, 0.3, 0.5, 0.9]).reshape(2, 1, 2, 1)
    target = jnp.array([1.0, 0.0, 1.0, 0.0]).reshape(2, 1, 2, 1)
    bce = ((-np.log(0.8) - np.log(0.7)) + (-np.log(0.5) - np.log(0.1))) / 2
    kl = (1 - 0.5 * np.log(2.0) + 0.0) / 2
    np.testing.assert_allclose(vae_bce_kl(recon, target, mu, logvar), bce + kl, rtol=1e-6)
    np.testing.assert_allclose(gon_loss("vae_bce_kl", (recon, mu, logvar), target), bce + kl, rtol=1e-6)


def test_vae_loss_equals_torch():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, (3, 4, 4, 2)).astype(np.float32)
    x = rng.uniform(0, 1, (3, 4, 4, 2)).astype(np.float32)
    mu, logvar = rng.normal(size=(2, 3, 5)).astype(np.float32)
    tp, tx = torch.from_numpy(p), torch.from_numpy(x)
    bce = torch.nn.functional.binary_cross_entropy(tp.reshape(3, -1), tx.reshape(3, -1), reduction="none").sum(1).mean()
    tmu, tlv = torch.from_numpy(mu), torch.from_numpy(logvar)
    kld = -0.5 * torch.sum(1 + tlv - tmu.pow(2) - tlv.exp(), dim=1).mean()
    got = vae_bce_kl(jnp.asarray(p), jnp.asarray(x), jnp.asarray(mu), jnp.asarray(logvar))
    np.testing.assert_allclose(float(got), float(bce + kld), rtol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    model = VariationalGON(4, vae32_stages(2, 1))
    z = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    return model, numpy_variables(model, z), z


def test_eval_decodes_mu(tiny):
    model, variables, z = tiny
    decoder = ConvDecoder(4, vae32_stages(2, 1), "relu", "sigmoid")
    p = variables["params"]
    want_mu = z @ p["mu_head"]["kernel"] + p["mu_head"]["bias"]
    (recon, mu, logvar), want = jax.jit(lambda v: (model.apply(v, z), decoder.apply(
        {"params": v["params"]["decoder"], "batch_stats": v["batch_stats"]["decoder"]}, want_mu)))(variables)
    np.testing.assert_allclose(mu, want_mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logvar, z @ p["logvar_head"]["kernel"] + p["logvar_head"]["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(recon, want, rtol=1e-5, atol=1e-6)
    assert recon.shape == (3, 32, 32, 1) and 0.0 <= float(recon.min()) and float(recon.max()) <= 1.0


def test_train_samples_latent(tiny):
    model, variables, z = tiny

    @jax.jit
    def sampled_and_mean(variables, key):
        apply = functools.partial(model.apply, variables, z, train=True, mutable=["batch_stats"])
        return apply(rngs={"reparam": key})[0][0], apply(sample_latent=False)[0][0]

    keys = [jax.random.key(k, impl="rbg") for k in (1, 1, 2)]  # rbg: threefry compiles slowly on CPU
    (a, _), (b, _), (c, _) = (sampled_and_mean(variables, k) for k in keys)
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a - c))) > 1e-4
    # logvar -> -60: exp(logvar / 2) ~ 1e-13, so the sample is mu and equals sample_latent=False.
    quiet = jax.tree.map(lambda v: v, variables)
    quiet["params"]["logvar_head"] = {"kernel": jnp.zeros((4, 4)), "bias": jnp.full((4,), -60.0)}
    sampled, mean = sampled_and_mean(quiet, keys[2])
    np.testing.assert_allclose(sampled, mean, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reparam"):
        model.apply(variables, z, train=True, mutable=["batch_stats"])


def test_gon_step_uses_bce_kl_as_inner_and_outer_loss(tiny):
    model, variables, _ = tiny
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (3, 32, 32, 1)), jnp.float32)

    @jax.jit
    def step_and_by_hand(variables):
        loss, (_, z, recon) = gon_loss_and_updates(variables, x, model=model, train=False)
        def loss_at(z):
            recon, mu, logvar = model.apply(variables, z)
            return vae_bce_kl(recon, x, mu, logvar)

        z_hand = -jax.grad(loss_at)(jnp.zeros((3, 4)))
        recon_hand, mu, logvar = model.apply(variables, z_hand)
        return loss, z, recon, z_hand, vae_bce_kl(recon_hand, x, mu, logvar), recon_hand

    loss, z, recon, z_hand, loss_hand, recon_hand = step_and_by_hand(variables)
    np.testing.assert_allclose(z, z_hand, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(recon, recon_hand, rtol=1e-5, atol=1e-7)
    assert float(loss) == pytest.approx(float(loss_hand), rel=1e-6)
    with pytest.raises(ValueError, match="reparam"):  # training samples the latent: needs rng
        gon_loss_and_updates(variables, x, model=model, train=True)
