"""f-UNetGAN losses (funetgan_jax/losses.py) on hand-made critics with closed-form answers."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funetgan_jax import losses
from funetgan_jax.mixing import interpolation_weights

B, H, W, C = 3, 4, 3, 2


class DOut(NamedTuple):
    """Same fields as funetgan_jax.discriminator.DiscriminatorOutput."""

    global_logit: jax.Array
    pixel_logits: jax.Array
    global_features: jax.Array | None = None
    pixel_features: jax.Array | None = None


def _arrays(seed, *shapes, scale=1.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.standard_normal(s).astype(np.float32) for s in shapes]


# ---------------------------------------------------------------- gradient penalties


def test_gradient_penalties_linear_critic():
    w, v, x_hat = _arrays(0, (H, W, C), (C,), (B, H, W, C), scale=0.3)

    def d_fn(x):  # D_enc = <w, x> + 0.3, D_dec = 1x1 conv with weights v, bias 0.1
        return jnp.sum(w * x, axis=(1, 2, 3)) + 0.3, (x @ v)[..., None] + 0.1

    gp_enc, gp_dec = jax.jit(lambda x: losses.gradient_penalties(d_fn, x))(x_hat)
    # d D_enc / d x = w for every sample; d sum_pix D_dec / d x = v at every pixel, so the
    # norm is sqrt(H W) ||v||.
    np.testing.assert_allclose(gp_enc, (np.linalg.norm(w) - 1) ** 2, rtol=1e-5)
    np.testing.assert_allclose(gp_dec, (np.sqrt(H * W) * np.linalg.norm(v) - 1) ** 2, rtol=1e-5)


def test_gradient_penalties_quadratic_critic():
    w, v, x_hat = _arrays(1, (H, W, C), (C,), (B, H, W, C), scale=0.5)

    def d_fn(x):  # D_enc = 1/2 <w, x^2>, D_dec = (x . v)^2 per pixel
        return DOut(0.5 * jnp.sum(w * x**2, axis=(1, 2, 3)), jnp.square(x @ v)[..., None])

    gp_enc, gp_dec = losses.gradient_penalties(d_fn, jnp.asarray(x_hat))
    x64, w64, v64 = (a.astype(np.float64) for a in (x_hat, w, v))
    norm_enc = np.sqrt(np.sum((w64 * x64) ** 2, axis=(1, 2, 3)))  # grad = w * x
    # grad at each pixel = 2 (x . v) v -> norm 2 ||v|| sqrt(sum_pix (x . v)^2)
    norm_dec = 2 * np.linalg.norm(v64) * np.sqrt(np.sum((x64 @ v64) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(gp_enc, np.mean((norm_enc - 1) ** 2), rtol=1e-5)
    np.testing.assert_allclose(gp_dec, np.mean((norm_dec - 1) ** 2), rtol=1e-5)
    assert np.ptp(norm_enc) > 0.1  # the samples really differ


def test_gradient_penalties_one_forward_and_aux():
    calls = []
    (v,) = _arrays(2, (C,))

    def d_fn(x):
        calls.append(1)
        return (jnp.sum(x, axis=(1, 2, 3)), (x @ v)[..., None]), {"count": jnp.int32(7)}

    (gp_enc, gp_dec), aux = losses.gradient_penalties(d_fn, jnp.ones((B, H, W, C)), has_aux=True)
    assert len(calls) == 1 and int(aux["count"]) == 7
    np.testing.assert_allclose(gp_enc, (np.sqrt(H * W * C) - 1) ** 2, rtol=1e-5)


def test_gradient_penalties_sum_over_batch_couples_samples():
    # D_enc(x)_b = <w, x_b - mean_b' x_b'>: each per-sample gradient is w (1 - 1/B), but the
    # gradient of the batch sum is w - B * w / B = 0 -> GP_enc = (0 - 1)^2 = 1 (the
    # BatchNorm-in-critic caveat, made exact).
    (w,) = _arrays(3, (H, W, C))

    def d_fn(x):
        centred = x - jnp.mean(x, axis=0, keepdims=True)
        return jnp.sum(w * centred, axis=(1, 2, 3)), centred[..., :1]

    gp_enc, gp_dec = losses.gradient_penalties(d_fn, jnp.asarray(_arrays(4, (B, H, W, C))[0]))
    np.testing.assert_allclose(gp_enc, 1.0, atol=1e-6)
    np.testing.assert_allclose(gp_dec, 1.0, atol=1e-6)


def test_gradient_penalty_is_differentiable_in_the_critic():
    (w,) = _arrays(5, (H, W, C), scale=0.3)
    x_hat = jnp.zeros((B, H, W, C))

    def gp_of(weights):
        d_fn = lambda x: (jnp.sum(weights * x, axis=(1, 2, 3)), x[..., :1])
        return losses.gradient_penalties(d_fn, x_hat)[0]

    n = np.linalg.norm(w)
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    np.testing.assert_allclose(jax.grad(gp_of)(jnp.asarray(w)), 2 * (n - 1) * w / n, rtol=1e-4, atol=1e-6)
    # a critic with zero input gradient: GP = 1 and a finite (zero) parameter gradient.
    np.testing.assert_allclose(gp_of(jnp.zeros_like(w)), 1.0)
    assert np.all(np.isfinite(jax.grad(gp_of)(jnp.zeros_like(w))))


# ---------------------------------------------------------------- discriminator / generator


def _hand_outputs():
    enc_real, enc_fake = jnp.array([1.0, 3.0]), jnp.array([0.5, -0.5])  # means 2 and 0
    # pixel sums per sample: real 10 and 2 (mean 6), fake -1 and 4 (mean 1.5)
    dec_real = jnp.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]])[..., None]
    dec_fake = jnp.array([[[0.0, 0.0], [0.0, -1.0]], [[1.0, 1.0], [1.0, 1.0]]])[..., None]
    return DOut(enc_real, dec_real), (enc_fake, dec_fake)


def test_discriminator_loss_mixup_by_hand():
    d_real, d_fake = _hand_outputs()
    lam = jnp.array([0.25, 0.5]).reshape(2, 1, 1, 1)
    loss, m = losses.discriminator_loss(
        d_real, d_fake, jnp.float32(0.25), jnp.float32(0.5),
        d_mixed=jnp.zeros((2, 2, 2, 1)), mix_weight=lam, lambda_gp=10.0, lambda_mix=2.0,
    )
    # L_enc = 0 - 2 + 10 * 0.25 = 0.5; L_dec = 1.5 - 6 + 10 * 0.5 = 0.5
    # targets: 0.25 [1 2 3 4] + 0.75 [0 0 0 -1] = [.25 .5 .75 .25] -> squares sum 0.9375
    #          0.5 [0 1 0 1] + 0.5 [1 1 1 1] = [.5 1 .5 1]         -> squares sum 2.5
    # L_mix = (0.9375 + 2.5) / 8 = 0.4296875; L_D = 0.5 + 0.5 + 2 * 0.4296875
    expected = {
        "l_enc": 0.5, "l_dec": 0.5, "l_mix": 0.4296875, "d_loss": 1.859375,
        "gp_enc": 0.25, "gp_dec": 0.5, "wasserstein_enc": 2.0, "wasserstein_dec": 4.5,
    }
    assert set(m) == set(expected)
    for k, val in expected.items():
        np.testing.assert_allclose(m[k], val, rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(loss, 1.859375, rtol=1e-6)


def test_discriminator_loss_cutmix_and_none_by_hand():
    d_real, d_fake = _hand_outputs()
    mask = jnp.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])[..., None]
    d_mixed = DOut(jnp.zeros(2), jnp.array([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])[..., None])
    _, m = losses.discriminator_loss(d_real, d_fake, 0.25, 0.5, d_mixed=d_mixed, mix_weight=mask)
    # targets [1 0 0 -1] and [1 1 0 1]: squared errors 1 and 1 over 8 pixels
    np.testing.assert_allclose(m["l_mix"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(m["d_loss"], 1.0 + 0.25, rtol=1e-6)
    loss, m = losses.discriminator_loss(d_real, d_fake, 0.25, 0.5)
    np.testing.assert_allclose(loss, 1.0, rtol=1e-6)
    assert float(m["l_mix"]) == 0.0
    with pytest.raises(ValueError, match="together"):
        losses.discriminator_loss(d_real, d_fake, 0.25, 0.5, d_mixed=d_mixed)


def test_mixup_consistency_closed_forms():
    real, fake = _arrays(6, (2, H, W, C), (2, H, W, C))
    v, b = jnp.array([0.7, -1.3]), 0.4
    lam = jnp.array([0.2, 0.9]).reshape(2, 1, 1, 1)
    mixed = lam * real + (1 - lam) * fake

    def consistency(dec):
        outs = [(jnp.zeros(2), dec(x)) for x in (real, fake, mixed)]
        return losses.discriminator_loss(outs[0], outs[1], 0.0, 0.0, d_mixed=outs[2], mix_weight=lam)[1]["l_mix"]

    # affine D_dec(x) = x.v + b: D(lam r + (1-lam) f) = lam D(r) + (1-lam) D(f) because the
    # weights sum to 1 and so carry the bias exactly once -> L_mix = 0.
    np.testing.assert_allclose(consistency(lambda x: (x @ v)[..., None] + b), 0.0, atol=1e-10)
    # quadratic D_dec = (x.v)^2: D(mixed) - target = -lam (1 - lam) ((r - f).v)^2
    d = np.asarray((real - fake) @ v)
    lam64 = np.array([0.2, 0.9]).reshape(2, 1, 1)
    expected = np.mean((lam64 * (1 - lam64) * d**2) ** 2)
    np.testing.assert_allclose(consistency(lambda x: jnp.square(x @ v)[..., None]), expected, rtol=1e-5)


@pytest.mark.parametrize("consistency,forwards", [("mixup", 4), ("cutmix", 4), ("none", 3)])
def test_discriminator_loss_from_networks_affine_critic(consistency, forwards):
    w, v = _arrays(7, (H, W, C), (C,), scale=0.2)
    real, fake = _arrays(8, (B, H, W, C), (B, H, W, C))

    def d_fn(x, state):  # affine per-pixel decoder: any Mixup/CutMix gives L_mix = 0
        return DOut(jnp.sum(w * x, axis=(1, 2, 3)) - 0.2, (x @ v)[..., None] + 0.5), state + 1

    fn = jax.jit(
        lambda r, f, key, s: losses.discriminator_loss_from_networks(
            d_fn, s, r, f, key, consistency=consistency, lambda_gp=10.0, lambda_mix=3.0
        )
    )
    loss, (m, state) = fn(real, fake, jax.random.key(0), jnp.int32(0))
    assert int(state) == forwards  # real, fake, [mixed,] interpolates
    r64, f64, w64, v64 = (a.astype(np.float64) for a in (real, fake, w, v))
    gp_enc = (np.linalg.norm(w64) - 1) ** 2  # linear critic: GP independent of the interpolates
    gp_dec = (np.sqrt(H * W) * np.linalg.norm(v64) - 1) ** 2
    l_enc = np.mean(np.sum(w64 * (f64 - r64), axis=(1, 2, 3))) + 10 * gp_enc
    l_dec = np.mean(np.sum((f64 - r64) @ v64, axis=(1, 2))) + 10 * gp_dec
    np.testing.assert_allclose(m["l_mix"], 0.0, atol=1e-5)
    np.testing.assert_allclose(m["l_enc"], l_enc, rtol=1e-5)
    np.testing.assert_allclose(m["l_dec"], l_dec, rtol=1e-5)
    np.testing.assert_allclose(loss, l_enc + l_dec, rtol=1e-5)


def test_discriminator_loss_from_networks_gp_uses_interpolates():
    # quadratic D_enc = 1/2 <x, x>: grad = x_hat, so GP_enc depends on where x_hat lies; real
    # = 1 and fake = 0 everywhere give x_hat = a, per sample and channel, in [0, 1).
    real, fake = jnp.ones((B, H, W, C)), jnp.zeros((B, H, W, C))

    def d_fn(x, state):
        return (0.5 * jnp.sum(x**2, axis=(1, 2, 3)), x[..., :1]), state

    _, (m, _) = losses.discriminator_loss_from_networks(
        d_fn, None, real, fake, jax.random.key(4), consistency="none", interpolation="per_sample"
    )
    _, k_gp = jax.random.split(jax.random.key(4))  # the documented (mix, interpolation) split
    a = np.asarray(interpolation_weights(k_gp, B, C, "per_sample")).reshape(B).astype(np.float64)
    # ||x_hat_b|| = a_b sqrt(H W C)
    np.testing.assert_allclose(m["gp_enc"], np.mean((a * np.sqrt(H * W * C) - 1) ** 2), rtol=1e-5)


def test_generator_loss_by_hand():
    _, d_fake = _hand_outputs()
    loss, m = losses.generator_loss(DOut(jnp.array([1.0, 2.0]), d_fake[1]))
    # -mean [1, 2] = -1.5; -mean of pixel sums [-1, 4] = -1.5
    np.testing.assert_allclose([m["g_enc"], m["g_dec"], loss], [-1.5, -1.5, -3.0])
    assert float(m["g_loss"]) == float(loss)


def test_logits_of_rejects_other_outputs():
    with pytest.raises(TypeError, match="DiscriminatorOutput"):
        losses.generator_loss(jnp.zeros(3))


# ---------------------------------------------------------------- encoder


def test_encoder_loss_terms_by_hand():
    x = jnp.array([0.0, 1.0]).reshape(1, 1, 2, 1)
    xr = jnp.array([1.0, 1.0]).reshape(1, 1, 2, 1)
    feats_x = (jnp.array([[1.0, 2.0]]), jnp.zeros((1, 1, 2, 2)))
    feats_xr = DOut(None, None, jnp.array([[1.0, 4.0]]), jnp.array([[[[1.0, 1.0], [0.0, 2.0]]]]))
    loss, m = losses.encoder_loss_terms(x, xr, feats_x, feats_xr, kappa=0.5)
    # image (1 + 0)/2 = 0.5; f_enc (0 + 4)/2 = 2; f_dec (1 + 1 + 0 + 4)/4 = 1.5
    np.testing.assert_allclose([m["l_img"], m["l_fenc"], m["l_fdec"]], [0.5, 2.0, 1.5])
    np.testing.assert_allclose(loss, 0.5 + 0.5 * (2.0 + 1.5))
    with pytest.raises(ValueError, match="features are None"):
        losses.encoder_loss_terms(x, xr, feats_x, DOut(None, None), kappa=0.5)


class _LinearNets:
    """x (2, 2, 2, 1) -> flat (2, 4); E: z = flat We (4 -> 3); G: xr = z Wg (3 -> 4);
    D features: global = flat A (4 -> 2), pixel = x * p (1 -> 2 channels per pixel)."""

    def __init__(self):
        self.x, self.we, self.wg, self.a = _arrays(9, (2, 2, 2, 1), (4, 3), (3, 4), (4, 2), scale=0.8)
        self.p = np.array([0.5, -1.5], np.float32)

    def encode(self, we):
        return lambda x, state: (x.reshape(2, 4) @ we, state + 1)

    def generate(self, z):
        return (z @ self.wg).reshape(2, 2, 2, 1)

    def features(self, x):
        return DOut(jnp.zeros(2), jnp.zeros((2, 2, 2, 1)), x.reshape(2, 4) @ self.a, x * self.p)


@pytest.mark.parametrize("detach", [False, True])
def test_encoder_loss_gradients_through_frozen_critic(detach):
    n = _LinearNets()

    def loss_fn(we, kappa):
        loss, (m, state) = losses.encoder_loss(
            n.encode(we), n.generate, n.features, jnp.int32(0), jnp.asarray(n.x), kappa=kappa, detach_critic=detach
        )
        return loss, (m, state)

    (loss, (m, state)), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(n.we), 1.0)
    assert int(state) == 1
    x, we, wg, a, p = (v.astype(np.float64) for v in (n.x.reshape(2, 4), n.we, n.wg, n.a, n.p))
    r = x @ we @ wg - x  # residual xr - x, (2, 4)
    # all features are linear, so the critic terms are functions of r alone:
    # f_enc diff = r A (2 x 2), f_dec diff = r_i p_c (2 x 4 x 2 values)
    l_img, l_fenc, l_fdec = np.mean(r**2), np.mean((r @ a) ** 2), np.sum(p**2) / 2 * np.mean(r**2)
    np.testing.assert_allclose([m["l_img"], m["l_fenc"], m["l_fdec"]], [l_img, l_fenc, l_fdec], rtol=1e-5)
    np.testing.assert_allclose(loss, l_img + l_fenc + l_fdec, rtol=1e-5)
    # d/dWe of mean(r M M^T r^T-style terms): dL/dr then chain through r = x We Wg - x
    g_img = 2 * r / r.size
    g_critic = 2 * (r @ a @ a.T) / (r @ a).size + np.sum(p**2) / 2 * 2 * r / r.size
    to_we = lambda g_r: x.T @ g_r @ wg.T
    expected = to_we(g_img) if detach else to_we(g_img + g_critic)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)
    critic_grad = grad - jax.grad(lambda w: loss_fn(w, 0.0)[0])(jnp.asarray(n.we))
    if detach:
        np.testing.assert_allclose(critic_grad, 0.0, atol=1e-7)
    else:
        assert np.abs(np.asarray(critic_grad)).max() > 1e-3


def test_encoder_loss_terms_without_features_is_the_image_term():
    x = np.zeros((2, 2, 2, 1), np.float32)
    xr = x + np.arange(8, dtype=np.float32).reshape(x.shape)
    loss, m = losses.encoder_loss_terms(x, xr, None, None, kappa=0.0)
    assert sorted(m) == ["e_loss", "l_img"]
    np.testing.assert_allclose([loss, m["l_img"]], [np.mean(np.arange(8.0) ** 2)] * 2)
    with pytest.raises(ValueError, match="needed for kappa=1.0"):
        losses.encoder_loss_terms(x, xr, None, None, kappa=1.0)


def test_encoder_loss_with_kappa_zero_does_not_run_the_critic():
    """kappa 0: the critic terms would weigh nothing, so D is not run at all (neither its
    forward nor its backward); loss and gradient are the image term's."""
    n = _LinearNets()

    @jax.custom_vjp
    def guarded(x):
        return x

    def fail(_, g):
        raise AssertionError("a gradient was taken through the critic")

    guarded.defvjp(lambda x: (x, None), fail)
    features = lambda x: n.features(guarded(x))  # noqa: E731

    def loss_fn(we, kappa):
        return losses.encoder_loss(n.encode(we), n.generate, features, jnp.int32(0), jnp.asarray(n.x),
                                   kappa=kappa)[0]

    grad = jax.grad(loss_fn)(jnp.asarray(n.we), 0.0)
    x, we, wg = (v.astype(np.float64) for v in (n.x.reshape(2, 4), n.we, n.wg))
    r = x @ we @ wg - x
    np.testing.assert_allclose(grad, x.T @ (2 * r / r.size) @ wg.T, rtol=1e-4, atol=1e-7)
    def no_critic(x):
        raise AssertionError("the critic ran")

    loss, (m, _) = losses.encoder_loss(n.encode(jnp.asarray(n.we)), n.generate, no_critic, jnp.int32(0),
                                       jnp.asarray(n.x), kappa=0.0)
    assert sorted(m) == ["e_loss", "l_img"]
    np.testing.assert_allclose([loss, m["l_img"]], [np.mean(r**2)] * 2, rtol=1e-5)
    with pytest.raises(AssertionError, match="through the critic"):
        jax.grad(loss_fn)(jnp.asarray(n.we), 1.0)


# ---------------------------------------------------------------- pixel reduction


def test_pixel_reduction_mean_scales_decoder_terms_by_exactly_hw():
    """'mean' divides the decoder head's Wasserstein estimate, generator term and penalty
    gradient by H * W; the global head is untouched."""
    d_real, d_fake = _hand_outputs()  # 2 x 2 pixels
    hw = 4.0
    _, m_sum = losses.discriminator_loss(d_real, d_fake, 0.25, 0.5, pixel_reduction="sum")
    _, m_mean = losses.discriminator_loss(d_real, d_fake, 0.25, 0.5, pixel_reduction="mean")
    np.testing.assert_allclose(m_mean["wasserstein_dec"] * hw, m_sum["wasserstein_dec"], rtol=1e-6)
    np.testing.assert_allclose(m_mean["wasserstein_enc"], m_sum["wasserstein_enc"], rtol=1e-6)
    _, g_sum = losses.generator_loss(d_fake, "sum")
    _, g_mean = losses.generator_loss(d_fake, "mean")
    np.testing.assert_allclose(g_mean["g_dec"] * hw, g_sum["g_dec"], rtol=1e-6)
    np.testing.assert_allclose(g_mean["g_enc"], g_sum["g_enc"], rtol=1e-6)

    w, v, x_hat = _arrays(5, (H, W, C), (C,), (B, H, W, C), scale=0.3)

    def d_fn(x):  # the linear critic of test_gradient_penalties_linear_critic
        return jnp.sum(w * x, axis=(1, 2, 3)) + 0.3, (x @ v)[..., None] + 0.1

    gp_enc, gp_dec = losses.gradient_penalties(d_fn, jnp.asarray(x_hat), pixel_reduction="mean")
    # d mean_pix D_dec / d x = v / (H W) at every pixel: norm sqrt(H W) ||v|| / (H W)
    np.testing.assert_allclose(gp_dec, (np.linalg.norm(v) / np.sqrt(H * W) - 1) ** 2, rtol=1e-5)
    np.testing.assert_allclose(gp_enc, (np.linalg.norm(w) - 1) ** 2, rtol=1e-5)


def test_pixel_reduction_rejects_other_names():
    d_real, d_fake = _hand_outputs()
    with pytest.raises(ValueError, match="config.train.pixel_reduction"):
        losses.generator_loss(d_fake, "max")
    with pytest.raises(ValueError, match="config.train.pixel_reduction"):
        losses.discriminator_loss(d_real, d_fake, 0.0, 0.0, pixel_reduction="median")


def test_critic_targets_features_or_logits():
    """config.train.encoder_target: 'features' (f-AnoGAN izi_f) or 'logits' (the original's
    encoder stage compares D's two outputs)."""
    from funetgan_jax.discriminator import DiscriminatorOutput

    g = jnp.arange(2.0)
    p = jnp.arange(2 * 4 * 4 * 1.0).reshape(2, 4, 4, 1)
    fe = jnp.ones((2, 8))
    fd = jnp.full((2, 4, 4, 3), 2.0)
    out = DiscriminatorOutput(g, p, fe, fd)
    enc, dec = losses.critic_targets(out, "logits")
    np.testing.assert_array_equal(enc, [[0.0], [1.0]])
    np.testing.assert_array_equal(dec, p)
    enc, dec = losses.critic_targets(out, "features")
    np.testing.assert_array_equal(enc, fe)
    np.testing.assert_array_equal(dec, fd)
    # The loss terms then compare those: mean squared differences of the logits.
    x = jnp.zeros((2, 4, 4, 3))
    _, m = losses.encoder_loss_terms(x, x, losses.critic_targets(out, "logits"),
                                     (jnp.array([[1.0], [3.0]]), jnp.zeros_like(p)), kappa=1.0)
    np.testing.assert_allclose(m["l_fenc"], (1 + 4) / 2)
    np.testing.assert_allclose(m["l_fdec"], np.mean(np.square(np.asarray(p))))
    with pytest.raises(ValueError, match="config.train.encoder_target must be one of"):
        losses.critic_targets(out, "pixels")


def test_latent_regression_loss_by_hand():
    z = jnp.asarray([[1.0, -2.0], [0.5, 0.0]])
    z_hat = jnp.asarray([[1.5, -2.0], [0.5, 3.0]], jnp.bfloat16)  # E may compute in bfloat16
    # ((0.5)^2 + 0 + 0 + 3^2) / 4
    np.testing.assert_allclose(losses.latent_regression_loss(z_hat, z), (0.25 + 9.0) / 4, rtol=1e-6)
    assert losses.latent_regression_loss(z_hat, z).dtype == jnp.float32
    with pytest.raises(ValueError, match=r"encoded latents \(2, 2\) and drawn latents \(2, 3\)"):
        losses.latent_regression_loss(z_hat, jnp.zeros((2, 3)))
