"""f-UNetGAN anomaly maps and scores (funetgan_jax/scoring.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from anomaly_core.networks import smoothing
from funetgan_jax import scoring


def _hand_batch():
    # sample 0 differs from its reconstruction, sample 1 is reconstructed perfectly
    x = np.zeros((2, 1, 2, 2), np.float32)
    x[0] = [[[0, 0], [1, 1]]]
    xr = x.copy()
    xr[0] = [[[1, 0], [1, 3]]]  # |xr - x| = [[1, 0], [0, 2]] -> channel means [0.5, 1.0]
    dec_x = np.zeros((2, 1, 2, 3), np.float32)
    dec_xr = dec_x.copy()
    dec_xr[0] = [[[3, 0, 0], [0, 0, -6]]]  # channel means of |.|: [1, 2]
    enc_x = np.array([[1.0, 1.0], [4.0, 5.0]], np.float32)
    enc_xr = np.array([[2.0, 3.0], [4.0, 5.0]], np.float32)  # squared diffs (1, 4) and (0, 0)
    return x, xr, (enc_x, dec_x), (enc_xr, dec_xr)


def test_maps_and_scores_by_hand():
    x, xr, fx, fxr = _hand_batch()
    scores, maps = scoring.anomaly_scores(x, xr, fx, fxr, kappa=0.5)
    assert scores.shape == (2,) and maps.shape == (2, 1, 2)
    # map = [0.5, 1.0] + 0.5 * [1, 2]; the perfect reconstruction maps to 0 everywhere
    # (the reference's batch-wide feature scalar would leak sample 0 into sample 1).
    np.testing.assert_allclose(maps, [[[1.0, 2.0]], [[0.0, 0.0]]])
    # f-AnoGAN: mean (xr - x)^2 = (1 + 0 + 0 + 4) / 4 = 1.25, plus 0.5 * (1 + 4) / 2
    np.testing.assert_allclose(scores, [1.25 + 0.5 * 2.5, 0.0])
    max_scores, _ = scoring.anomaly_scores(x, xr, fx, fxr, kappa=0.5, image_score="max_map")
    np.testing.assert_allclose(max_scores, [2.0, 0.0])
    mean_scores, _ = scoring.anomaly_scores(x, xr, fx, fxr, kappa=0.5, image_score="mean_map")
    np.testing.assert_allclose(mean_scores, [1.5, 0.0])


def test_kappa_zero_needs_no_critic_features():
    x, xr, fx, fxr = _hand_batch()
    for image_score in scoring.IMAGE_SCORES:
        with_feats = scoring.anomaly_scores(x, xr, fx, fxr, kappa=0.0, image_score=image_score)
        without = scoring.anomaly_scores(x, xr, None, None, kappa=0.0, image_score=image_score)
        for a, b in zip(with_feats, without):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(without[1], [[[0.5, 1.0]], [[0.0, 0.0]]])
    with pytest.raises(ValueError, match="needed for kappa=0.5"):
        scoring.anomaly_scores(x, xr, None, None, kappa=0.5)
    with pytest.raises(ValueError, match="give both"):
        scoring.anomaly_scores(x, xr, fx, None, kappa=0.0)


@pytest.mark.parametrize("sigma", [0.1, 0.7, 1.1, 2.0, 4.0])
def test_gaussian_smoothing_matches_scipy(sigma):
    maps = np.random.default_rng(0).random((2, 16, 12)).astype(np.float32)
    smoothed = jax.jit(functools.partial(smoothing.gaussian_smooth, sigma=sigma))(maps)
    # sigma 4 -> radius 16, wider than the 12-pixel axis: the reflection repeats
    expected = gaussian_filter(maps.astype(np.float64), sigma=(0, sigma, sigma), mode="reflect", truncate=4.0)
    np.testing.assert_allclose(smoothed, expected, atol=1e-5)


def test_gaussian_kernel_radius_follows_scipy():
    # int(4 * 1.1 + 0.5) = 4 -> 9 taps (ceil would give 5 -> 11 taps)
    taps = smoothing.gaussian_kernel(1.1)
    assert taps.shape == (9,)
    np.testing.assert_allclose(taps.sum(), 1.0)
    np.testing.assert_allclose(taps[4] / taps[5], np.exp(0.5 / 1.1**2))


def test_smoothed_max_map_score():
    rng = np.random.default_rng(1)
    x = rng.random((3, 16, 16, 3)).astype(np.float32)
    xr = x.copy()
    xr[:, 5, 7, :] += 4.0  # one sharp spike per image: smoothing lowers its peak
    feats = (np.zeros((3, 8), np.float32), rng.random((3, 16, 16, 4)).astype(np.float32))
    feats_r = (np.ones((3, 8), np.float32), feats[1] + 0.1 * rng.random((3, 16, 16, 4)).astype(np.float32))
    fn = jax.jit(functools.partial(scoring.anomaly_scores, smoothing_sigma=2.0, image_score="max_map"))
    scores, maps = fn(x, xr, feats, feats_r)
    _, raw = scoring.anomaly_scores(x, xr, feats, feats_r)
    np.testing.assert_allclose(maps, gaussian_filter(np.asarray(raw), sigma=(0, 2, 2), mode="reflect"), atol=1e-5)
    np.testing.assert_allclose(scores, np.asarray(maps).max(axis=(1, 2)))
    assert np.all(np.asarray(scores) < np.asarray(raw).max(axis=(1, 2)) - 1.0)


def test_bad_settings_and_shapes_are_rejected():
    x, xr, fx, fxr = _hand_batch()
    with pytest.raises(ValueError, match="image_score"):
        scoring.anomaly_scores(x, xr, fx, fxr, image_score="median_map")
    with pytest.raises(ValueError, match="smoothing_sigma"):
        scoring.anomaly_scores(x, xr, fx, fxr, smoothing_sigma=-1.0)
    low_res = (fx[0], np.zeros((2, 1, 1, 3), np.float32))
    with pytest.raises(ValueError, match="image resolution"):
        scoring.anomaly_scores(x, xr, low_res, low_res)


def test_critic_map_by_hand():
    # residual moments: mean 1, mean square 5 -> sd 2; critic: mean -3, mean square 13 -> sd 2
    stats = {"residual_mean": 1.0, "residual_sq": 5.0, "critic_mean": -3.0, "critic_sq": 13.0}
    logits = np.array([[[[-3.0], [-7.0]], [[1.0], [-5.0]]]], np.float32)  # (1, 2, 2, 1)
    out = scoring.critic_map(logits, stats, 1.5)
    # 1.5 * 2 * (-3 - logit) / 2
    np.testing.assert_allclose(out, [[[0.0, 6.0], [-6.0, 3.0]]], rtol=1e-6)


def test_critic_map_enters_the_map_before_smoothing():
    x, xr, fx, fxr = _hand_batch()
    extra = np.array([[[1.0, -1.0]], [[2.0, 0.0]]], np.float32)
    scores, maps = scoring.anomaly_scores(x, xr, fx, fxr, kappa=0.5, critic_map=extra, image_score="max_map")
    np.testing.assert_allclose(maps, [[[2.0, 1.0]], [[2.0, 0.0]]])
    np.testing.assert_allclose(scores, [2.0, 2.0])
    _, smoothed = scoring.anomaly_scores(x, xr, fx, fxr, kappa=0.5, critic_map=extra, smoothing_sigma=1.0)
    np.testing.assert_allclose(smoothed, gaussian_filter(np.asarray(maps, np.float64), sigma=(0, 1, 1),
                                                         mode="reflect"), atol=1e-5)
    with pytest.raises(ValueError, match="critic map"):
        scoring.anomaly_scores(x, xr, fx, fxr, critic_map=extra[:, :, :1])


def _linear_generator():
    w = np.random.default_rng(2).normal(size=(3, 2 * 2 * 1)).astype(np.float32)
    return w, lambda z: jnp.tanh(z @ w).reshape(-1, 2, 2, 1)


def test_refine_latent_is_adam_on_the_squared_error_per_image():
    w, generate = _linear_generator()
    rng = np.random.default_rng(3)
    x = np.tanh(rng.normal(size=(4, 3)).astype(np.float32) @ w).reshape(4, 2, 2, 1)
    z0 = rng.normal(size=(4, 3)).astype(np.float32)
    refined = jax.jit(functools.partial(scoring.refine_latent, generate, steps=30, lr=0.1))(x, z0)
    # brute force, one image at a time: Adam (torch/optax defaults) written out
    for i in range(4):
        z, m, v = z0[i].astype(np.float64), 0.0, 0.0
        for t in range(1, 31):
            g = np.asarray(jax.grad(lambda q: jnp.sum(jnp.square(generate(q[None]) - x[i])))(jnp.asarray(z, jnp.float32)))
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            z = z - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        np.testing.assert_allclose(refined[i], z, rtol=1e-3, atol=1e-4)
    before = np.sum(np.square(np.asarray(generate(z0)) - x))
    after = np.sum(np.square(np.asarray(generate(refined)) - x))
    assert after < 0.5 * before
    np.testing.assert_array_equal(scoring.refine_latent(generate, x, z0, 0, 0.1), z0)
    with pytest.raises(ValueError, match="refine_steps"):
        scoring.refine_latent(generate, x, z0, -1, 0.1)
